import json

import pytest

from makemore.models import MODEL_NAMES

FAST = {"bigram": [], "ngram": [], "bigram-nn": ["--steps", "60"], "mlp": ["--steps", "60", "--batch-size", "32"]}


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_train_sample_eval_round_trip(run, small_names, model):
    out = run("train", "--model", model, "--data", small_names, "-q", *FAST.get(model, ["--steps", "60"]))
    assert f"saved out/{model}.safetensors" in out.output
    samples = run("sample", "-n", 7, "--seed", 1).output.splitlines()
    assert len(samples) == 7 and all(samples)
    again = run("sample", "-n", 7, "--seed", 1).output.splitlines()
    assert samples == again
    result = json.loads(run("eval", "--split", "dev", "--json").output)
    assert result["model"] == model and result["split"] == "dev"
    assert 0 < result["loss"] < 4 and result["n_items"] > 0
