"""The makemore command line: parse options, call the library (makemore.api), print the results. torch is
imported only inside the commands, so that `makemore --help` starts at once."""
from __future__ import annotations

import dataclasses
import math
import os
import sys

import click

from makemore import __version__, distributed, options
from makemore.jsontext import to_json
from makemore.models import MODEL_NAMES, MODELS

SPLITS = ("train", "dev", "test", "all")
SEED = click.IntRange(0, 2**63 - 1)  # what torch.manual_seed accepts
SIZE_RULE = "by data size"  # a setting's default in the help, where the model derives it from the data


class Parsed(click.ParamType):
    """A value that a library function parses, its ValueError the message shown."""

    def __init__(self, name: str, parse):
        self.name, self.parse = name, parse

    def convert(self, value, param, ctx):
        try:
            return self.parse(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)


NUMBERS = Parsed("numbers", options.numbers)  # comma-separated numbers, e.g. 0.8,0.1,0.1
DURATION = Parsed("duration", options.time_budget)  # seconds, or such as 90s, 10m, 1.5h


class PositiveFloat(click.FloatRange):
    """A finite number above 0: infinity or NaN would pass a range check and then ruin every result."""

    def __init__(self):
        super().__init__(min=0, min_open=True)

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


class DeclaredType(click.ParamType):
    """A declared option's value, parsed by its kind (or its own parser); its range, which may differ from
    model to model, is the library's to check."""

    def __init__(self, spec):
        self.spec, self.name = spec, spec.metavar or spec.kind.__name__.upper()

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        try:
            return self.spec.parse(value) if self.spec.parse is not None else self.spec.kind(value)
        except ValueError as e:
            self.fail(str(e) if self.spec.parse is not None else f"{value!r} is not {self.spec.kind.__name__}",
                      param, ctx)


def _has_size_rule(cls, name: str) -> bool:
    """Whether the model derives the setting from the data size (asked for some size: any will do)."""
    return name in cls.train_defaults_for(100_000, cls.train_defaults.get("batch_size", 32))


def declared_flags(train_fields: tuple | None = ()) -> list[tuple[str, options.Option, dict]]:
    """(field name, its Option, its default by model name) for every model option and the given training
    settings (None: all of them); a flag of several models has one kind, and its help says what it means for each."""
    from makemore.models import trainable_classes
    from makemore.train import TrainConfig

    classes = trainable_classes()
    found: dict[str, tuple[options.Option, dict]] = {}
    helps: dict[str, dict[str, list[str]]] = {}
    for model, cls in classes.items():
        for name, (spec, default) in options.declared(cls.Config).items():
            first, defaults = found.setdefault(name, (spec, {}))
            if first.kind is not spec.kind:
                raise TypeError(f"{options.flag(name)} is a {first.kind.__name__} in one model and a "
                                f"{spec.kind.__name__} in {model}: one flag has one kind")
            defaults[model] = default
            helps.setdefault(name, {}).setdefault(spec.help, []).append(model)
    for name, by_text in helps.items():
        text = " ".join(f"{', '.join(models)}: {text}" for text, models in by_text.items()) \
            if len(by_text) > 1 else next(iter(by_text))
        found[name] = (dataclasses.replace(found[name][0], help=text), found[name][1])
    train = options.declared(TrainConfig)
    for name in train if train_fields is None else train_fields:
        spec, default = train[name]
        found[name] = (spec, {model: SIZE_RULE if _has_size_rule(cls, name) else cls.train_defaults.get(name, default)
                              for model, cls in classes.items() if not cls.counts})
    return [(name, spec, defaults) for name, (spec, defaults) in found.items()]


def _declared_option(name: str, spec, defaults: dict):
    """The click option of a declared field; defaults: its default by model name, shown in the help."""
    if spec.kind is bool:
        defaults = {model: "on" if value else "off" for model, value in defaults.items()}
    by_value: dict = {}
    for model, value in defaults.items():
        by_value.setdefault(value, []).append(model)
    if len(by_value) == 1:
        shown = options.plain(next(iter(by_value)))
    else:
        shown = "; ".join(f"{', '.join(models)} {options.plain(value)}" for value, models in by_value.items())
    help_text = f"{spec.help} [default: {shown}]"
    flag = options.flag(name)
    if spec.kind is bool:
        return click.Option([f"{flag}/--no-{flag[2:]}", name], default=None, help=help_text, show_default=False)
    kind = click.Choice(spec.choices) if spec.choices else DeclaredType(spec)
    return click.Option([flag, name], type=kind, default=None, help=help_text, show_default=False)


class Command(click.Command):
    """A command that turns the library's errors into one-line messages and exit codes (1, or 2 for usage)."""

    def invoke(self, ctx):
        from makemore.errors import MakemoreError, OptionError, printable

        try:
            return super().invoke(ctx)
        except MakemoreError as e:
            if os.environ.get("MAKEMORE_DEBUG"):
                raise
            # under torchrun an error may be one process's own (a file missing on one machine): say whose
            message = printable(e) if distributed.is_main() else f"rank {distributed.rank()}: {printable(e)}"
            if isinstance(e, OptionError):
                raise click.UsageError(message, ctx) from None
            raise click.ClickException(message) from None
        except KeyboardInterrupt:
            if distributed.is_main():
                click.echo("interrupted", err=True)
            sys.exit(130)


class Group(click.Group):
    command_class = Command
    group_class = type  # its subgroups are Groups too


class RegistryCommand(Command):
    """A command whose model options and training settings are built from the registry's model classes and
    train.TrainConfig when click first needs them: `makemore --help` imports neither the models nor torch."""

    def __init__(self, *args, train_fields: tuple | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.train_fields, self.own_params, self.built_for = train_fields, self.params, None

    def get_params(self, ctx):
        if self.built_for != tuple(MODELS.items()):  # built once, and again only if the registry changed
            self.built_for = tuple(MODELS.items())
            model = next(i for i, p in enumerate(self.own_params) if p.name == "model_name")
            self.own_params[model].type = click.Choice(tuple(MODELS))
            declared = [_declared_option(*flag) for flag in declared_flags(self.train_fields)]
            self.params = self.own_params[:model + 1] + declared + self.own_params[model + 1:]
        return super().get_params(ctx)


def _split_settings(settings: dict) -> tuple[dict, dict]:
    """The declared flags' values (None where not given) as (model options, training settings)."""
    from makemore.train import TrainConfig

    train = options.declared(TrainConfig)
    return {k: v for k, v in settings.items() if k not in train}, {k: v for k, v in settings.items() if k in train}


def device_option(f):
    f = click.option("--threads", "n_threads", type=click.IntRange(1, 1024),
                     help="torch's threads on the CPU. [default: chosen for the model and the machine's load, "
                          "and changed while training if the load changes; OMP_NUM_THREADS if set]")(f)
    return click.option("--device", default="auto", show_default=True, metavar="DEVICE",
                        help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps.")(f)


def checkpoint_options(f):
    f = click.option("--out", default="out", show_default=True, type=click.Path(file_okay=False),
                     help="Folder of checkpoints; the model trained last there is used.")(f)
    f = click.option("--checkpoint", "checkpoint_path", type=click.Path(dir_okay=False),
                     help="Use this checkpoint instead of the one trained last in --out.")(f)
    f = click.option("--model", type=click.Choice(MODEL_NAMES),
                     help="Refuse a checkpoint that holds another model. [default: any]")(f)
    return f


def labelling_options(command):
    """--labels, --item-column and --label-column: how --data holds each item's label."""
    command = click.option("--label-column", metavar="NAME",
                           help="With --item-column: the CSV column of each item's label.")(command)
    command = click.option("--item-column", metavar="NAME",
                           help="--data is a CSV file with a header: the column of the items.")(command)
    return click.option("--labels", is_flag=True,
                        help="--data holds labelled items: LABEL<TAB>ITEM lines, or a folder of LABEL.txt files "
                        "(one item per line).")(command)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="makemore")
def cli():
    """Make more of anything: train a character-level model on a file of items (one per line),
    then sample new items that look like them and measure how good the model is."""


@cli.command(cls=RegistryCommand)
# no click defaults for the model and the split: with --resume, a default must not contradict the checkpoint
@click.option("--model", "model_name", type=click.Choice(MODEL_NAMES),
              help="Which model to train. [default: mlp; with --resume the checkpoint's]")
@click.option("--data", type=click.Path(), help="Text file, one item per line. [default: names.txt]")
@click.option("--out", default="out", type=click.Path(file_okay=False), help="Folder for the checkpoint.")
@click.option("--name", help="Checkpoint name in --out. [default: the model's name; with "
              "--resume the resumed checkpoint's, or NAME-2 when that is the resumed file itself]")
@click.option("--splits", type=NUMBERS, metavar="TRAIN,DEV,TEST",
              help="Train, dev, test fractions. [default: 0.8,0.1,0.1; with --resume the checkpoint's]")
@click.option("--split-seed", type=SEED,
              help="Seed of the shuffle before splitting. [default: 42; with --resume the checkpoint's]")
@click.option("--resume", is_flag=True, help="Continue the run in --checkpoint (or the one trained last in --out); the "
              "continuation is saved in --out, never over the checkpoint it continues.")
@click.option("--checkpoint", "checkpoint_path", type=click.Path(dir_okay=False),
              help="With --resume: the run to continue.")
@click.option("--strict", is_flag=True, help="With --resume --data: a file other than the one trained on is an error, "
              "not a warning.")
@click.option("--time", "time_budget", type=DURATION, metavar="DURATION",
              help="Train for this long instead of a number of steps (600, 90s, 10m, 1.5h; at most 7 days): the "
              "steps are chosen from the measured speed to end the whole command within it, and recorded.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@labelling_options
@device_option
def train(model_name, data, out, name, splits, split_seed, resume, checkpoint_path, strict, time_budget, quiet,
          device, n_threads, labels, item_column, label_column, **settings):
    """Train a model on a file of items and save its checkpoint in --out.

    For data-parallel training on several CPU processes or GPUs, launch it with torchrun, e.g.
    torchrun --standalone --nproc-per-node 2 -m makemore train; rank 0 prints and saves.
    """
    if not resume and checkpoint_path:
        raise click.UsageError("--checkpoint goes with --resume; to name the new checkpoint use --name")
    from makemore import api, checkpoint
    from makemore.errors import Interrupted

    from makemore.budget import process_started

    resume_path = (checkpoint_path or checkpoint.latest(out)) if resume else None
    try:
        result = api.train(model_name, data, out, name, *_split_settings(settings), splits, split_seed,
                           resume=resume_path, device=device, progress=not quiet, strict=strict, n_threads=n_threads,
                           labels=labels, item_column=item_column, label_column=label_column,
                           time_budget=time_budget, started=process_started())
    except Interrupted as e:
        if not distributed.is_main():
            # the others exit quietly: a failed one would make torchrun kill rank 0 before it reports
            sys.exit(0)
        launcher = "torchrun ... -m makemore" if distributed.launched() else "makemore"
        if not e.saved:
            click.echo(f"{e}: stopped before the first step; nothing was saved", err=True)
        else:
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
    if result.curve is not None:
        click.echo(f"loss curve: {result.curve}", err=True)


@cli.command()
@click.option("-n", "--num", "n", type=click.IntRange(min=1), default=10,
              help="How many items: exactly this many, each meeting every constraint (of all labels together).")
@click.option("--label", "labels", multiple=True, metavar="LABEL",
              help="A labelled model: items of this label. Repeatable: -n items in all, each item's label drawn among "
              "those given in proportion to their training counts (for N of each, run once per label). [default: "
              "every label, in proportion to their training counts]")
@click.option("--seed", type=SEED, help="Seed for reproducible samples. [default: random]")
@click.option("--temperature", type=PositiveFloat(), default=1.0, help="Below 1: safer; above 1: wilder.")
@click.option("--top-k", type=click.IntRange(min=1), help="Draw only from the k likeliest characters.")
@click.option("--top-p", type=click.FloatRange(min=0, max=1, min_open=True),
              help="Nucleus sampling: draw only from the likeliest characters that together reach P.")
@click.option("--prefix", default="", show_default=False,
              help="Items that start with these characters (the model is conditioned on them).")
@click.option("--suffix", default="", show_default=False, help="Items that end with these characters.")
@click.option("--min-len", type=click.IntRange(min=0), default=1,
              help="Shortest item: the end is not drawn before this length.")
@click.option("--max-len", type=click.IntRange(min=1),
              help="Longest item; longer draws are rejected. [default and most: twice the longest in the data]")
@click.option("--regex", metavar="PATTERN",
              help="Items that the regular expression matches whole (RE2 syntax: no backreferences or lookaround).")
@click.option("--new", is_flag=True, help="Only items that are nowhere in the training data (any split).")
@click.option("--exclude", type=click.Path(),
              help="Also reject the items listed in this file, one per line.")
@click.option("--unique", is_flag=True, help="No item twice.")
@click.option("--max-tries", type=click.IntRange(min=1),
              help="Budget of draws. [default: 100 per item asked, at least 200,000]")
@click.option("--patience", type=PositiveFloat(), default=10.0,
              help="Give up after this many seconds without finding a new item.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per line: item, label (a labelled model's: the one it was drawn under, which "
              "log_prob is under), log_prob, log_prob_per_char and split (train, dev, test, none).")
@click.option("--nearest", is_flag=True, help="Add the closest item of the train split and its edit distance.")
@click.option("--mark", is_flag=True, help="Add a tab and where each item occurs: train, dev, test or new.")
@checkpoint_options
@device_option
def sample(seed, exclude, as_json, nearest, mark, out, checkpoint_path, model, device, n_threads, **constraints):
    """Print items drawn from a trained model, one per line as they are found: exactly -n of them, each
    meeting every constraint, or as many as --max-tries draws or --patience found (then a line on stderr
    says why; exit 1 if none)."""
    from makemore import api
    from makemore.constraints import Request

    request = Request(exclude=frozenset(api.read_items_file(exclude) if exclude else ()), **constraints)
    trained = api.load(checkpoint_path, out, device, model, n_threads)
    # a progress bar would break into the items when both go to the terminal
    drawing = trained.draw(request, seed, progress=sys.stderr.isatty() and not sys.stdout.isatty())
    for note in drawing.notes:
        click.echo(note, err=True)
    try:
        # a labelled model's items are of several labels unless one --label is given: each line then says its own
        show_labels = trained.labels is not None and len(set(constraints.get("labels") or trained.labels)) > 1
        for group in drawing.labelled_groups():
            items = [item for item, _ in group]
            labels = [label for _, label in group] if trained.labels is not None else None
            click.echo("\n".join(_sample_lines(trained, items, labels, as_json, nearest, mark, show_labels)))
    except BrokenPipeError:
        # the reader has what it wanted (`makemore sample -n 1000000 | head`): stop drawing, quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    if not drawing.complete:
        click.echo(drawing.report(), err=True)


def _sample_lines(trained, items: list[str], labels: list[str] | None, as_json: bool, nearest: bool,
                  mark: bool, show_labels: bool = False) -> list[str]:
    """The lines sample prints for items (drawn under labels, a labelled model's): plain, with their label (where
    show_labels), mark or nearest item, or JSON objects."""
    if as_json:
        return [to_json(record) for record in trained.describe(items, nearest, labels)]
    where = trained.where(items) if mark else None
    records = trained.describe(items, True, labels) if nearest else None
    return ["\t".join([item] + ([labels[i]] if show_labels else []) + ([where[i]] if mark else []) +
                      ([records[i]["nearest"], str(records[i]["distance"])] if nearest else []))
            for i, item in enumerate(items)]


@cli.command("inspect")
@click.argument("checkpoint_file", metavar="[CHECKPOINT]", required=False, type=click.Path(dir_okay=False))
@click.option("--out", default="out", show_default=True, type=click.Path(file_okay=False),
              help="Without CHECKPOINT: the model trained last in this folder.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def inspect_(checkpoint_file, out, as_json):
    """What a checkpoint holds: model, hyperparameters, vocabulary, data, split and training."""
    from makemore import api
    from makemore.errors import printable

    info = api.inspect(checkpoint_file, out)
    if as_json:
        click.echo(to_json(info, indent=2))
        return
    config = ", ".join(f"{k} {v}" for k, v in info["config"].items())
    counted = f", {info['n_buffers']:,} counts" if info["n_buffers"] else ""
    chars = info["vocab"][1:].replace("\n", "\\n")
    data, split = info["data"], info["split"]
    sizes = split.get("sizes")
    train = info["train"]
    rows = [
        ("checkpoint", f"{info['checkpoint']} ({_size(info['file_size'])}, format {info['format_version']}, "
                       f"makemore {info['makemore_version']})"),
        ("model", f"{info['model']}: {config} ({info['n_params']:,} parameters{counted})"),
        ("vocabulary", f"{info['vocab_size']} tokens: the boundary {info['boundary']!r} and {chars!r}"),
        ("data", f"{data['path']} ({data['n_items']:,} items, fingerprint {data['fingerprint']}; {data['status']})"),
        ("split", "/".join(f"{f:g}" for f in split["fractions"]) + f" with seed {split['seed']}"
                  + (": " + ", ".join(f"{v:,} {k}" for k, v in sizes.items()) if sizes else "")),
        ("training", f"{info['steps']:,} steps" + (f" ({train.get('optimizer')}, lr {train.get('lr'):g}, "
                     f"{train.get('schedule')}, batch {train.get('batch_size')}, seed {train.get('seed')})"
                     if info["steps"] else " (counted in one pass)")),
        ("best dev loss", f"{info['best_dev_loss']:.4f}" if info["best_dev_loss"] is not None else "none recorded"),
    ]
    if info["time_budget"] is not None:
        rows.insert(-1, ("time budget", _budget_text(info["time_budget"])))
    if info["labels"] is not None:
        rows.insert(4, ("labels", f"{len(info['labels'])} with their training items: "
                                  + ", ".join(f"{label} {n:,}" for label, n in info["labels"].items())))
    for name, value in rows:  # what a checkpoint holds may have any character in it: none reaches the terminal raw
        click.echo(f"{name:<14}{printable(value)}")


def _budget_text(record: dict) -> str:
    """How a time budget set the steps, in one line."""
    text = (f"{record['seconds']:g}s: {record['planned_steps']:,} steps planned at "
            f"{1000 * record['step_seconds']:.3g} ms each")
    revisions = record["revisions"]
    if revisions:
        text += "; revised as the speed changed: " + ", ".join(
            f"to {r['new_steps']:,} at step {r['step']:,}" for r in revisions)
    if (revisions[-1]["new_steps"] if revisions else record["planned_steps"]) == record.get("most_steps"):
        text += " (the most a budget buys this model on its data)"
    return text


def _size(n: int) -> str:
    if n < 1024:
        return f"{n:,} bytes"
    return f"{n / 1024:.1f} KB" if n < 1024**2 else f"{n / 1024**2:.1f} MB"


@cli.command("eval")
@click.option("--split", type=click.Choice(SPLITS), default="dev", help="Which part of the data.")
@click.option("--data", type=click.Path(), help="Evaluate on this file. [default: the items the checkpoint keeps, "
              "the data it was trained on]")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object; an infinite loss is null.")
@click.option("--strict", is_flag=True, help="With --data: the training file changed since training is an error, "
              "not a warning.")
@click.option("--classify", is_flag=True, help="A labelled model: also classify the split's items (as makemore "
              "classify does) and report the accuracy and the confusion matrix (JSON: accuracy, confusion as "
              "{true label: {predicted label: items}}).")
@labelling_options
@checkpoint_options
@device_option
def eval_(split, data, as_json, strict, classify, labels, item_column, label_column, out, checkpoint_path, model,
          device, n_threads):
    """Mean negative log-likelihood per character (nats) and perplexity of a split; a labelled model's per label
    too (JSON: "labels": {label: {loss, n_chars, n_items}})."""
    from makemore import api

    trained = api.load(checkpoint_path, out, device, model, n_threads)
    result = trained.evaluate(split, data, strict, progress=True, classify=classify, labels=labels,
                              item_column=item_column, label_column=label_column)
    if as_json:
        click.echo(to_json(result))
        return
    click.echo(f"{result['split']} loss {result['loss']:.4f} (perplexity {result['perplexity']:.2f}) over "
               f"{result['n_chars']:,} characters in {result['n_items']:,} items; "
               f"{result['model']} from {result['checkpoint']}")
    if "labels" in result:
        width = max(map(len, result["labels"]))
        for label, part in result["labels"].items():
            loss = f"loss {part['loss']:.4f}" if part["n_items"] else "no items"
            click.echo(f"  {label:<{width}}  {loss} over {part['n_chars']:,} characters in {part['n_items']:,} items")
    if classify:
        confusion = result["confusion"]
        right = sum(confusion[label][label] for label in confusion)
        click.echo(f"classify: accuracy {100 * result['accuracy']:.2f}% ({right:,} of {result['n_items']:,} items)")
        click.echo("confusion (rows: true label, columns: predicted label):")
        names = list(confusion)
        width = max(len(name) for name in names)
        cell = max(width, max(len(f"{n:,}") for row in confusion.values() for n in row.values()))
        click.echo(" " * width + "".join(f"  {name:>{cell}}" for name in names))
        for true in names:
            click.echo(f"{true:<{width}}" + "".join(f"  {confusion[true][guess]:>{cell},}" for guess in names))


@cli.command()
@click.argument("items", nargs=-1)
@click.option("--data", type=click.Path(), help="Also score every item of this file (one per line).")
@click.option("--totals", is_flag=True, help="Only each item's total and mean NLL, not every transition.")
@click.option("--label", metavar="LABEL", help="A labelled model: score under this label. [default: each item's most "
              "likely label, as makemore classify finds it]")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object; an infinite loss (probability 0) is null.")
@checkpoint_options
@device_option
def score(items, data, totals, label, as_json, out, checkpoint_path, model, device, n_threads):
    """How likely the model finds each ITEM: every transition's probability and log-probability (the
    lecture's `.e: 0.0478 -3.0408`), then the item's total and mean negative log-likelihood (nats)."""
    from makemore import api

    items = list(items) + (api.read_items(data) if data else [])
    if not items:
        raise click.UsageError("give the items to score, or a file of them with --data")
    trained = api.load(checkpoint_path, out, device, model, n_threads)
    results = trained.score(items, label)
    nll = sum(r["nll"] for r in results)
    n = sum(r["n"] for r in results)
    if as_json:
        kept = [{k: v for k, v in r.items() if k != "transitions" or not totals} for r in results]
        click.echo(to_json(dict(model=trained.name, checkpoint=str(trained.path), items=kept, nll=nll,
                                mean_nll=nll / n, n=n)))
        return
    for i, r in enumerate(results):
        under = ""
        if "label" in r:
            under = f" (label {r['label']}{', the most likely' if r['label_source'] == 'most likely' else ''})"
        if not totals:
            if i:
                click.echo()
            click.echo(r["item"] + under)
            for t in r["transitions"]:
                click.echo(f"{t['context']}{t['next']}: {t['prob']:.4f} {t['logprob']:.4f}")
        click.echo(f"{r['item']}{under}: total nll {r['nll']:.4f}, mean nll {r['mean_nll']:.4f} ({r['n']} "
                   "transitions)")
    if len(results) > 1:
        if not totals:
            click.echo()
        click.echo(f"all {len(results)} items: total nll {nll:.4f}, mean nll {nll / n:.4f} ({n} transitions)")


@cli.command()
@click.argument("items", nargs=-1)
@click.option("--data", type=click.Path(), help="Also classify every line of this file (one item per line).")
@click.option("--top", type=click.IntRange(min=1), help="Only the K likeliest labels of each item. [default: all]",
              metavar="K")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per item: item, label (the likeliest) and "
              "labels, a list of {label, probability}, likeliest first.")
@checkpoint_options
@device_option
def classify(items, data, top, as_json, out, checkpoint_path, model, device, n_threads):
    """Which label each ITEM is, by a labelled model: p(label | item), proportional to p(item | label) times the
    label's share of the training items, one line per label (ITEM<TAB>LABEL<TAB>PROBABILITY), likeliest first."""
    from makemore import api

    items = list(items) + (api.read_items(data) if data else [])
    if not items:
        raise click.UsageError("give the items to classify, or a file of them with --data")
    results = api.load(checkpoint_path, out, device, model, n_threads).classify(items, top)
    if as_json:
        click.echo("\n".join(to_json(result) for result in results))
        return
    click.echo("\n".join(f"{r['item']}\t{guess['label']}\t{guess['probability']:.4f}"
                          for r in results for guess in r["labels"]))


@cli.command("lr-find", cls=RegistryCommand, train_fields=("batch_size", "optimizer", "weight_decay", "decay", "seed"))
@click.option("--model", "model_name", type=click.Choice(MODEL_NAMES), default="mlp", help="Which model to sweep.")
@click.option("--data", type=click.Path(), help="Text file, one item per line. [default: names.txt]")
@click.option("--min-lr", type=PositiveFloat(), default=1e-3, help="First learning rate.")
@click.option("--max-lr", type=PositiveFloat(), default=1.0, help="Last learning rate.")
@click.option("--steps", type=click.IntRange(min=20, max=10**7), default=1000,
              help="Steps of the sweep, one rate each, spaced exponentially.")
@click.option("--splits", type=NUMBERS, metavar="TRAIN,DEV,TEST", default="0.8,0.1,0.1",
               help="Train, dev, test fractions (sweeps on train).")
@click.option("--split-seed", type=SEED, default=42, help="Seed of the shuffle before splitting.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False),
              help="Where to write the plot. [default: OUT/lr-find-MODEL.png]")
@click.option("--out", default="out", type=click.Path(file_okay=False), help="Folder for the plot.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with every rate and loss.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@labelling_options
@device_option
def lr_find(model_name, data, min_lr, max_lr, steps, splits, split_seed, plot_path, out, as_json, quiet, device,
            n_threads, labels, item_column, label_column, **settings):
    """The lecture's learning-rate sweep: from a fresh model, one step at each of --steps rates spaced
    exponentially from --min-lr to --max-lr; suggests the rate at the valley of the loss before it blows
    up, and plots loss against log10(lr) when matplotlib is installed."""
    from makemore import api, plots

    plot_path = plot_path or os.path.join(out, f"lr-find-{model_name}.png")
    sweep = api.lr_find(model_name, data, *_split_settings(settings), min_lr, max_lr, steps, splits, split_seed,
                        device, progress=not quiet, plot_path=plot_path, n_threads=n_threads,
                        labelling=dict(labels=labels, item_column=item_column, label_column=label_column))
    if sweep.plot is None:
        click.echo(f"no plot: {plots.INSTALL_HINT}", err=True)
    floor_lr = sweep.lrs[sweep.floor_step]
    blowup = sweep.lrs[sweep.blowup_step] if sweep.blowup_step is not None else None
    if as_json:
        click.echo(to_json(dict(suggested_lr=sweep.suggested_lr, suggested_step=sweep.suggested_step,
                                floor_lr=floor_lr, blowup_lr=blowup, lrs=sweep.lrs, losses=sweep.losses,
                                settings=sweep.settings, plot=str(sweep.plot) if sweep.plot else None)))
        return

    def rate(lr: float) -> str:
        return f"{lr:.3g} (10^{math.log10(lr):.2f})"

    click.echo(f"suggested lr {rate(sweep.suggested_lr)}: the near edge of the valley, smoothed loss "
               f"{sweep.smoothed[sweep.suggested_step]:.4f}")
    click.echo(f"the valley's floor: lr {rate(floor_lr)}, smoothed loss {sweep.smoothed[sweep.floor_step]:.4f}")
    click.echo(f"the loss blows up from lr {rate(blowup)}" if blowup is not None else
               f"the loss did not blow up up to lr {sweep.lrs[-1]:.3g}; a wider --max-lr shows where it does")
    if sweep.plot is not None:
        click.echo(f"plot: {sweep.plot}")


@cli.group()
def plot():
    """Draw a trained model as a PNG picture (needs matplotlib: pip install "makemore[plot]")."""


def _plot_command(what: str, help_text: str) -> None:
    @plot.command(what, help=help_text)
    @click.option("--output", "-o", type=click.Path(dir_okay=False),
                  help="PNG file to write. [default: beside the checkpoint]")
    @checkpoint_options
    def command(output, out, checkpoint_path, model):
        from makemore import api

        click.echo(getattr(api.load(checkpoint_path, out, model=model), f"plot_{what}")(output))


_plot_command("loss", "The training curve: train loss at each log point, dev loss at each evaluation (training "
                      "also writes it, as OUT/NAME.loss.png).")
_plot_command("embeddings", "The lecture's scatter of the characters in the embedding table C (its first two "
                            "principal components when C has more than two dimensions).")
_plot_command("counts", "The lecture's table of bigram counts as a labelled heatmap (for bigram-nn: its "
                        "probabilities; a labelled model's: its labels' averaged, weighted by their training counts).")


@plot.command("confusion")
@click.option("--split", type=click.Choice(SPLITS), default="dev", help="Which part of the data to classify.")
@click.option("--output", "-o", type=click.Path(dir_okay=False),
              help="PNG file to write. [default: beside the checkpoint]")
@checkpoint_options
def plot_confusion(split, output, out, checkpoint_path, model):
    """A labelled model's confusion matrix on a split (eval --classify): rows the true labels, columns the labels
    classify predicts."""
    from makemore import api

    click.echo(api.load(checkpoint_path, out, model=model).plot_confusion(output, split))


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but this machine's own (127.0.0.1, ::1) lets others reach the page.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=False,
              help="Port to listen on. [default: a free one]")
@click.option("--open", "open_browser", is_flag=True, help="Open the page in the web browser.")
@click.option("--out", default="out", show_default=True, type=click.Path(file_okay=False),
              help="Folder of checkpoints: the page starts with the one trained last and can switch between them.")
@click.option("--checkpoint", "checkpoint_path", type=click.Path(dir_okay=False),
              help="Start with this checkpoint instead of the one trained last in --out.")
@click.option("--model", type=click.Choice(MODEL_NAMES), help="Refuse a checkpoint that holds another model. "
              "[default: any]")
@device_option
def serve(host, port, open_browser, out, checkpoint_path, model, device, n_threads):
    """A local page to explore a trained model: sample, watch the next character's distribution, score items,
    see the model's pictures and what its checkpoint holds; the JSON API under it is usable from scripts.
    Ctrl-C stops it."""
    from makemore import serve as server_module

    server = server_module.start(checkpoint_path, out, host, port, device, n_threads, model)
    click.echo(f"serving {server.explorer.view.name} at {server.url} (Ctrl-C stops)")
    if open_browser and not server_module.open_page(server.url):
        click.echo("no web browser found; open the address above", err=True)
    server.run()


@cli.command()
@click.argument("checkpoints", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", default="out", type=click.Path(file_okay=False), help="Folder for the mixture's checkpoint.")
@click.option("--name", default="mixture", help="Checkpoint name in --out.")
@click.option("--kind", type=click.Choice(["log-linear", "linear"]), default="log-linear", show_default=True,
              help="log-linear: p proportional to p_1^w_1 p_2^w_2 ...; linear: p = w_1 p_1 + w_2 p_2 + ...")
@click.option("--weights", type=NUMBERS, metavar="W1,W2,...",
              help="One weight per checkpoint. [default: fitted on dev, by Newton's method or (linear) EM]")
@device_option
def mix(checkpoints, out, name, kind, weights, device, n_threads):
    """Mix two or more trained models into one, weighted to fit the dev split.

    A log-linear mixture predicts p proportional to p_1^w_1 p_2^w_2 ..., a linear one p = w_1 p_1 + w_2 p_2 + ...,
    from the CHECKPOINTS, which must come from the same data file, split and vocabulary. Its weights have seen
    dev: report its loss on test."""
    from makemore import api

    result = api.mix(list(checkpoints), out, name, list(weights) if weights else None, device, n_threads, kind,
                     progress=True)
    for path, w, loss in zip(result.components, result.weights, result.component_dev_losses):
        click.echo(f"weight {w:.4f}  dev loss {loss:.4f}  {path}")
    method = "EM" if kind == "linear" else "Newton"
    how = f"{kind}, {method}, {result.iterations} iterations" if result.iterations else f"{kind}, given weights"
    click.echo(f"mixture dev loss {result.dev_loss:.4f} ({how}, {result.seconds:.2f}s); saved {result.path}")


def main():
    cli(prog_name="makemore")
