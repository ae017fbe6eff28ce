"""The makemore command line: parse options, call the library (makemore.api), print the results.

torch is imported only inside the commands, so that `makemore --help` starts at once.
"""
from __future__ import annotations

import functools
import json
import math
import os
import sys

import click

from makemore import __version__, distributed
from makemore.models import MODEL_NAMES

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "step", "cosine")
SPLITS = ("train", "dev", "test", "all")


class SplitsType(click.ParamType):
    """Three non-negative fractions summing to 1, e.g. 0.8,0.1,0.1."""

    name = "TRAIN,DEV,TEST"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            parts = tuple(float(p) for p in value.split(","))
        except ValueError:
            self.fail(f"{value!r} is not three numbers such as 0.8,0.1,0.1", param, ctx)
        if len(parts) != 3 or any(p < 0 or math.isnan(p) for p in parts):
            self.fail(f"{value!r} must be three non-negative numbers such as 0.8,0.1,0.1", param, ctx)
        if abs(sum(parts) - 1) > 1e-6:
            self.fail(f"{value!r} sums to {sum(parts):g}, not 1", param, ctx)
        if parts[0] == 0:
            self.fail("the train fraction must be above 0", param, ctx)
        return parts


def positive_float(min_open: float = 0.0):
    return click.FloatRange(min=min_open, min_open=True)


def handle_errors(command):
    """Turn the library's errors into one-line messages and exit codes (1, or 2 for usage errors)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from makemore.errors import MakemoreError

        try:
            return command(*args, **kwargs)
        except MakemoreError as e:
            if os.environ.get("MAKEMORE_DEBUG"):
                raise
            from makemore.api import OptionError

            # under torchrun an error may be one process's own (a file missing on one machine): say whose
            message = str(e) if distributed.is_main() else f"rank {distributed.rank()}: {e}"
            if isinstance(e, OptionError):
                raise click.UsageError(message) from None
            raise click.ClickException(message) from None
        except KeyboardInterrupt:
            if distributed.is_main():
                click.echo("interrupted", err=True)
            sys.exit(130)

    return wrapper


def device_option(f):
    return click.option("--device", default="auto", show_default=True,
                        help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps.")(f)


def checkpoint_options(f):
    f = click.option("--out", default="out", show_default=True, type=click.Path(file_okay=False),
                     help="Folder of checkpoints; the model trained last there is used.")(f)
    f = click.option("--checkpoint", "checkpoint_path", type=click.Path(dir_okay=False),
                     help="Use this checkpoint instead of the one trained last in --out.")(f)
    return f


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="makemore")
def cli():
    """Make more of anything: train a character-level model on a file of items (one per line),
    then sample new items that look like them and measure how good the model is."""


@cli.command()
@click.option("--model", "model_name", type=click.Choice(MODEL_NAMES), default="mlp", help="Which model to train.")
@click.option("--data", type=click.Path(), help="Text file, one item per line. [default: names.txt]")
@click.option("--out", default="out", type=click.Path(file_okay=False), help="Folder for the checkpoint.")
@click.option("--name", help="Checkpoint name in --out. [default: the model's name]")
@click.option("--block-size", type=click.IntRange(min=1), help="Characters of context. [default: per model]")
@click.option("--n-embd", type=click.IntRange(min=1), help="Embedding dimensions (mlp). [default: 10]")
@click.option("--n-hidden", type=click.IntRange(min=1), help="Hidden units (mlp). [default: 200]")
@click.option("--smoothing", type=click.FloatRange(min=0), help="Add-k smoothing (bigram). [default: 1]")
@click.option("--init", type=click.Choice(["scaled", "randn"]),
              help="mlp weight init: scaled for tanh, or randn as in lecture part 2. [default: scaled]")
@click.option("--steps", type=click.IntRange(min=0), help="Optimizer steps. [default: per model]")
@click.option("--batch-size", type=click.IntRange(min=1),
              help="Examples per step, per process under torchrun (N processes: N x this). [default: per model]")
@click.option("--lr", type=positive_float(), help="Learning rate (peak). [default: per model]")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), help="[default: per model]")
@click.option("--schedule", type=click.Choice(SCHEDULES),
              help="constant; step (the lecture's: lr/10 for the second half); cosine. [default: per model]")
@click.option("--warmup", type=click.IntRange(min=0), help="Linear warmup steps (cosine). [default: 0]")
@click.option("--weight-decay", type=click.FloatRange(min=0),
              help="bigram-nn: the lecture's penalty wd*(W**2).mean(); others: the optimizer's decay. [default: 0]")
@click.option("--eval-interval", type=click.IntRange(min=1), help="Steps between dev evaluations. [default: steps/10]")
@click.option("--seed", type=int, help="Seed of initialisation and batches. [default: 42]")
@click.option("--splits", type=SplitsType(), default="0.8,0.1,0.1", help="Train, dev, test fractions.")
@click.option("--split-seed", type=int, default=42, help="Seed of the shuffle before splitting.")
@click.option("--resume", is_flag=True, help="Continue the run in --checkpoint (or the one trained last in --out).")
@click.option("--checkpoint", "checkpoint_path", type=click.Path(dir_okay=False), help="With --resume: the run to continue.")
@click.option("--strict", is_flag=True, help="With --resume: a changed data file is an error, not a warning.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@device_option
@handle_errors
def train(model_name, data, out, name, block_size, n_embd, n_hidden, smoothing, init, steps, batch_size, lr,
          optimizer, schedule, warmup, weight_decay, eval_interval, seed, splits, split_seed, resume,
          checkpoint_path, strict, quiet, device):
    """Train a model on a file of items and save its checkpoint in --out.

    For data-parallel training on several CPU processes or GPUs, launch it with torchrun, e.g.
    torchrun --standalone --nproc-per-node 2 -m makemore train; rank 0 prints and saves.
    """
    from makemore import api, checkpoint
    from makemore.train import Interrupted

    model_options = dict(block_size=block_size, n_embd=n_embd, n_hidden=n_hidden, smoothing=smoothing, init=init)
    train_options = dict(steps=steps, batch_size=batch_size, lr=lr, optimizer=optimizer, schedule=schedule,
                         warmup=warmup, weight_decay=weight_decay, eval_interval=eval_interval, seed=seed)
    resume_path = None
    if resume:
        given = [k for k, v in {**model_options, **train_options, "name": name}.items()
                 if v is not None and k != "steps"]
        if given:
            raise click.UsageError("--resume continues a run as it was set up; only --steps may change "
                                   f"(got --{given[0].replace('_', '-')})")
        resume_path = checkpoint_path or checkpoint.latest(out)
    elif checkpoint_path:
        raise click.UsageError("--checkpoint goes with --resume; to name the new checkpoint use --name")
    try:
        result = api.train(model_name, data, out, name, model_options, train_options, splits, split_seed,
                           resume=resume_path, device=device, progress=not quiet, strict=strict)
    except Interrupted as e:
        if not distributed.is_main():
            # the others exit quietly: a failed one would make torchrun kill rank 0 before it reports
            sys.exit(0)
        launcher = "torchrun ... -m makemore" if distributed.launched() else "makemore"
        click.echo(f"{e}: stopped at step {e.step:,} and saved {e.path}; continue with: "
                   f"{launcher} train --resume --checkpoint {e.path}", err=True)
        sys.exit(128 + e.signum)
    if not distributed.is_main():
        return
    if result.replaced:
        click.echo(f"replaced the earlier checkpoint {result.path}", err=True)
    dev = f", dev loss {result.dev_loss:.4f}" if not math.isnan(result.dev_loss) else ""
    timing = f" ({result.step:,} steps, {result.seconds:.1f}s)" if result.step else ""
    click.echo(f"train loss {result.train_loss:.4f}{dev}{timing}; saved {result.path}")


@cli.command()
@click.option("-n", "--num", "n", type=click.IntRange(min=1), default=10, help="How many items.")
@click.option("--seed", type=int, help="Seed for reproducible samples. [default: random]")
@click.option("--temperature", type=positive_float(), default=1.0, help="Below 1: safer; above 1: wilder.")
@click.option("--top-k", type=click.IntRange(min=1), help="Draw only from the k likeliest characters.")
@click.option("--prefix", default="", help="Items that start with these characters.")
@click.option("--max-len", type=click.IntRange(min=1), help="Longest item. [default: twice the longest in the data]")
@click.option("--mark", is_flag=True, help="Add a tab and where each item occurs: train, dev, test or new.")
@checkpoint_options
@device_option
@handle_errors
def sample(n, seed, temperature, top_k, prefix, max_len, mark, out, checkpoint_path, device):
    """Print new items drawn from a trained model, one per line."""
    from makemore import api

    trained = api.load(checkpoint_path, out, device)
    if top_k is not None and top_k > len(trained.vocab):
        raise click.BadParameter(f"{top_k} is above the vocabulary size {len(trained.vocab)}", param_hint="'--top-k'")
    items = trained.sample(n, seed, temperature, top_k, prefix, max_len)
    where = trained.where(items) if mark else None
    for i, item in enumerate(items):
        click.echo(f"{item}\t{where[i]}" if mark else item)


@cli.command("eval")
@click.option("--split", type=click.Choice(SPLITS), default="dev", help="Which part of the data.")
@click.option("--data", type=click.Path(), help="Evaluate on this file instead of the training file.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--strict", is_flag=True, help="A data file changed since training is an error, not a warning.")
@checkpoint_options
@device_option
@handle_errors
def eval_(split, data, as_json, strict, out, checkpoint_path, device):
    """Mean negative log-likelihood per character (nats) and perplexity of a split."""
    from makemore import api

    trained = api.load(checkpoint_path, out, device)
    result = trained.evaluate(split, data, strict)
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(f"{result['split']} loss {result['loss']:.4f} (perplexity {result['perplexity']:.2f}) over "
                   f"{result['n_chars']:,} characters in {result['n_items']:,} items; "
                   f"{result['model']} from {result['checkpoint']}")


def main():
    cli(prog_name="makemore")
