"""The lecture's figures on the lecture's own file (../shared/data/names-2018.txt), through the CLI.

Reference values (../shared/data/README.md): the counting bigram over all 228,146 bigrams has mean NLL
2.45401 without smoothing and 2.45458 with +1 smoothing; the lecture's MLP lands at dev 2.16 to 2.17.
Skipped when the file is absent.
"""
import json
import os

import pytest

from conftest import SHARED_NAMES, needs_shared_names

pytestmark = [needs_shared_names(), pytest.mark.slow]


def train_and_eval_all(run, model, *flags) -> float:
    """Train on every item (--splits 1,0,0) and return the mean NLL over all of them."""
    run("train", "--model", model, "--data", SHARED_NAMES, "--splits", "1,0,0", "--name", model, "-q", *flags)
    result = json.loads(run("eval", "--checkpoint", f"out/{model}.safetensors", "--split", "all", "--json").output)
    assert result["n_items"] == 32033 and result["n_chars"] == 228146
    return result["loss"]


@pytest.mark.parametrize("smoothing, expected", [("1", 2.4546), ("0", 2.4540)])
def test_counting_bigram_gives_the_lecture_loss_to_four_decimals(run, smoothing, expected):
    loss = train_and_eval_all(run, "bigram", "--smoothing", smoothing)
    assert round(loss, 4) == expected


def test_bigram_nn_with_its_defaults_converges_to_the_counting_model(run):
    counted = train_and_eval_all(run, "bigram", "--smoothing", "0")
    trained = train_and_eval_all(run, "bigram-nn", "--weight-decay", "0")
    # the counts (smoothing 0) are the maximum-likelihood bigram, so the network can only approach them
    assert counted - 1e-9 <= trained < counted + 0.002


# The README's command for the lecture's MLP; --seed 2147483647 is the lecture's generator seed, which gives
# its exact initial weights (tests/test_mlp.py checks that)
LECTURE_MLP_FLAGS = ("--block-size", 3, "--n-embd", 10, "--n-hidden", 200, "--init", "randn", "--no-direct",
                     "--optimizer", "sgd", "--batch-size", 32, "--lr", 0.1, "--schedule", "step", "--weight-decay", 0,
                     "--steps", 200000, "--seed", 2147483647)


def test_the_lecture_mlp_by_flags_lands_in_the_lectures_range(run):
    """200,000 steps (about a minute): the lecture's model and training from flags alone."""
    run("train", "--model", "mlp", "--data", SHARED_NAMES, "-q", *LECTURE_MLP_FLAGS)
    result = json.loads(run("eval", "--checkpoint", "out/mlp.safetensors", "--split", "dev", "--json").output)
    assert 2.15 <= result["loss"] <= 2.18


# The README's command for the lecture's part 5 model (its defaults are the lecture's settings)
LECTURE_WAVENET_FLAGS = ("--block-size", 8, "--n-embd", 24, "--n-hidden", 128, "--optimizer", "sgd",
                         "--batch-size", 32, "--lr", 0.1, "--schedule", "step", "--decay-at", 0.75,
                         "--steps", 200000)


@pytest.mark.skipif(not os.environ.get("MAKEMORE_SLOW_TESTS"),
                    reason="200,000 WaveNet steps take about 5 minutes on 2 cores: set MAKEMORE_SLOW_TESTS=1")
def test_the_lecture_wavenet_by_flags_lands_at_the_lectures_loss(run):
    run("train", "--model", "wavenet", "--data", SHARED_NAMES, "-q", *LECTURE_WAVENET_FLAGS)
    result = json.loads(run("eval", "--checkpoint", "out/wavenet.safetensors", "--split", "dev", "--json").output)
    assert 1.98 <= result["loss"] <= 2.01
