import json

import pytest
import torch

from makemore import api, checkpoint
from makemore.models import MODEL_NAMES, get_model_class

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
    assert f"dev loss {result['loss']:.4f}" in out.output  # the run's best dev loss is the saved model's
    # a model built from its class and config with the file's weights predicts as the loaded one
    trained = api.load(f"out/{model}.safetensors", device="cpu")
    cls = get_model_class(model)
    torch.manual_seed(1)
    rebuilt = cls(cls.Config(**trained.ckpt["config"]), len(trained.vocab))
    rebuilt.load_state_dict(checkpoint.load(f"out/{model}.safetensors")["state_dict"])
    x = torch.randint(len(trained.vocab), (4, trained.block_size))
    assert torch.equal(rebuilt.eval().next_logits(x), trained.model.next_logits(x))
