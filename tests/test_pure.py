"""Sampling without torch (makemore.pure): the checkpoint read without torch holds torch's numbers, each
forward pass gives the torch model's logits, the random stream is the same on integers and tensors, and
both samplers draw the same items; `makemore sample` takes this path without importing torch."""
import io
import json
import pickle
import random
import subprocess
import sys

import pytest
import torch

from makemore import api, checkpoint, mixing, pure, sampling, stream
from makemore.constraints import NothingFound
from makemore.errors import CheckpointError

def _train(names_file, tmp_path_factory, model, steps=None, **model_options) -> api.Trained:
    out = tmp_path_factory.mktemp("out")
    train_options = dict(steps=steps) if steps else None
    return api.load(api.train(model, names_file, out, model_options=model_options, train_options=train_options,
                              progress=False).path)


@pytest.fixture(scope="module")
def models(names_file, tmp_path_factory) -> dict:
    """A checkpoint of every model makemore has, in its variants, trained briefly."""
    small = dict(block_size=4, n_embd=6, n_hidden=24, steps=150)
    trained = {
        "mlp": _train(names_file, tmp_path_factory, "mlp", **small),
        "mlp without direct": _train(names_file, tmp_path_factory, "mlp", **small, direct=False, init="randn"),
        "bigram-nn": _train(names_file, tmp_path_factory, "bigram-nn", steps=30),
        "bigram": _train(names_file, tmp_path_factory, "bigram"),
        "bigram add-0": _train(names_file, tmp_path_factory, "bigram", smoothing=0.0),
        "bigram kn": _train(names_file, tmp_path_factory, "bigram", smoothing="kn"),
        "ngram": _train(names_file, tmp_path_factory, "ngram", block_size=3),
        "ngram add-0.5": _train(names_file, tmp_path_factory, "ngram", block_size=3, smoothing=0.5),
    }
    out = tmp_path_factory.mktemp("mixture")
    mixed = mixing.mix([trained["mlp"].path, trained["ngram"].path], out)
    trained["mixture"] = api.load(mixed.path)
    return trained


def test_read_without_torch_gives_torchs_numbers(models):
    for name, trained in models.items():
        plain = checkpoint.read_without_torch(trained.path)
        loaded = torch.load(trained.path, weights_only=True)
        assert plain["config"] == loaded["config"] and plain["vocab"] == loaded["vocab"], name
        assert plain["state_dict"].keys() == loaded["state_dict"].keys(), name
        for key, tensor in loaded["state_dict"].items():
            array = plain["state_dict"][key]
            assert array.shape == tuple(tensor.shape), (name, key)
            assert array.values == tensor.flatten().tolist(), (name, key)
        assert plain.get("resume") is None or plain["resume"]["rng"] is None  # left unread


def test_read_without_torch_follows_strides_and_offsets(tmp_path, models):
    ckpt = torch.load(models["bigram-nn"].path, weights_only=True)
    base = torch.arange(60, dtype=torch.float32).view(6, 10)
    ckpt["state_dict"] = {"transposed": base.t(), "window": base[1:4, 2:7], "row": base[3], "ints": torch.arange(5)}
    checkpoint.save(ckpt, tmp_path / "odd.pt")
    state = checkpoint.read_without_torch(tmp_path / "odd.pt")["state_dict"]
    for key, tensor in ckpt["state_dict"].items():
        assert state[key].shape == tuple(tensor.shape) and state[key].values == tensor.flatten().tolist(), key
    assert state["transposed"].rows() == base.t().tolist()


def test_read_without_torch_refuses_code_and_damage_as_load_does(tmp_path, models):
    ckpt = torch.load(models["bigram"].path, weights_only=True)
    ckpt["train"] = dict(hook=random.Random)  # a Python object: unpickling it would run code
    with open(tmp_path / "object.pt", "wb") as f:
        torch.save(ckpt, f)
    assert checkpoint.read_without_torch(tmp_path / "object.pt") is None
    with pytest.raises(CheckpointError, match="refused to load"):
        checkpoint.load(tmp_path / "object.pt")
    raw = bytearray(models["bigram"].path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (tmp_path / "flipped.pt").write_bytes(bytes(raw))
    (tmp_path / "text.pt").write_text("not a checkpoint")
    for bad in ("flipped.pt", "text.pt", "missing.pt"):
        with pytest.raises(CheckpointError) as plain:
            checkpoint.read_without_torch(tmp_path / bad)
        with pytest.raises(CheckpointError) as loaded:
            checkpoint.load(tmp_path / bad)
        assert str(plain.value) == str(loaded.value)


def test_unpickler_builds_no_other_global():
    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    with pytest.raises(pickle.UnpicklingError):
        checkpoint._Unpickler(io.BytesIO(pickle.dumps({"x": Evil()}))).load()


def test_stream_is_the_same_on_integers_and_tensors():
    rng = random.Random(0)
    seeds = [0, 1, 42, 2**63 - 1, 2**64 - 1] + [rng.getrandbits(64) for _ in range(20)]
    indices = [0, 1, 2, 255, 256, 10**6, 2**40, 2**62] + [rng.randrange(2**62) for _ in range(20)]
    for seed in seeds:
        key = stream.key_of(seed)
        keys = stream.item_keys(key, torch.tensor(indices))
        assert [k & stream.MASK for k in keys.tolist()] == [stream.item_key(key, i) for i in indices]
        for step in (0, 1, 7, 63, 10**5):
            assert stream.uniforms(keys, step).tolist() == [stream.uniform(stream.item_key(key, i), step)
                                                           for i in indices]
    # uniform on [0, 1): mean and spread of a uniform distribution, no two items alike
    u = stream.uniforms(stream.item_keys(stream.key_of(7), torch.arange(100_000)), 3)
    assert 0 <= float(u.min()) and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 0.005 and abs(float(u.var()) - 1 / 12) < 0.002
    assert len(set(u.tolist())) == len(u)
    assert stream.key_of(None) != stream.key_of(None)


def _contexts(trained, n=200):
    g = torch.Generator().manual_seed(0)
    return torch.randint(len(trained.vocab), (n, trained.block_size), generator=g)


def test_every_forward_pass_gives_the_torch_models_logits(models):
    for name, trained in models.items():
        forward = pure.forward_of(checkpoint.read_without_torch(trained.path))
        assert forward is not None and forward.block_size == trained.block_size, name
        contexts = _contexts(trained)
        with torch.no_grad():
            expected = trained.model(contexts).double()
        got = torch.tensor([forward(c) for c in contexts.tolist()], dtype=torch.float64)
        finite = torch.isfinite(expected)
        assert torch.equal(finite, torch.isfinite(got)), name
        assert torch.allclose(got[finite], expected[finite], rtol=1e-5, atol=1e-5), name
        if name == "bigram add-0":
            assert not bool(finite.all())  # unseen transitions: probability 0, both ways


def test_requests_it_does_not_draw_are_left_to_torch(models, monkeypatch, run):
    path = models["mlp"].path
    assert pure.sample(path, device="cuda", n=5, seed=1) is None
    assert pure.sample(path, model="bigram", n=5, seed=1) is None
    assert pure.sample(path, n=1_000_000, seed=1) is None  # many items: the batched sampler is quicker
    monkeypatch.delitem(pure._FORWARDS, "mlp")  # a model without a forward pass here
    assert pure.sample(path, n=5, seed=1) is None
    printed = run("sample", "-n", 5, "--seed", 1, "--checkpoint", path).stdout.splitlines()
    assert printed == list(models["mlp"].sample(5, seed=1))


def test_next_token_probs_and_draw_match_the_batched_ones():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(300, 27, generator=g) * 3
    logits[::7, 5:] = float("-inf")
    u = torch.rand(300, generator=g, dtype=torch.float64)
    for temperature, top_k, top_p in [(1.0, None, None), (0.5, 3, None), (2.0, None, 0.7), (1.3, 10, 0.9),
                                      (1.0, 1, None), (1.0, None, 1e-9)]:
        for banned in (False, True):
            expected = sampling.next_token_probs(logits, temperature, top_k, top_p,
                                                 torch.full((300,), banned))
            tokens, stuck = sampling._draw(expected, u)
            for row in range(300):
                probs = pure.next_token_probs(logits[row].tolist(), temperature, top_k, top_p, banned)
                if bool(stuck[row]):
                    assert probs is None or pure.draw(probs, float(u[row])) is None
                    continue
                assert torch.allclose(torch.tensor(probs, dtype=torch.float64), expected[row], rtol=1e-12, atol=1e-15)
                assert pure.draw(probs, float(u[row])) == int(tokens[row])


REQUESTS = [dict(n=25), dict(n=10, prefix="ma", min_len=5, temperature=0.7), dict(n=10, suffix="a", unique=True),
            dict(n=8, top_k=4, max_len=6), dict(n=8, top_p=0.6, regex="[a-m].*"), dict(n=12, new=True)]


@pytest.mark.parametrize("request_options", REQUESTS)
def test_both_samplers_draw_the_same_items(models, request_options):
    for name, trained in models.items():
        for seed in (0, 123456789):
            quick = pure.sample(trained.path, seed=seed, **request_options)
            assert quick is not None, name
            batched = trained.sample(seed=seed, **request_options)
            assert list(quick) == list(batched), (name, seed)
            assert (quick.draws, quick.rejected) == (batched.draws, batched.rejected), (name, seed)


def test_too_many_rejections_hand_over_to_torch(models, monkeypatch, run):
    monkeypatch.setattr(pure, "MAX_OPS", 1)  # as many draws as items asked, then torch
    path = models["mlp"].path
    assert pure.sample(path, n=3, seed=5, regex="[a-m].*a") is None
    printed = run("sample", "-n", 3, "--seed", 5, "--regex", "[a-m].*a", "--checkpoint", path).stdout.splitlines()
    assert printed == list(models["mlp"].sample(3, seed=5, regex="[a-m].*a"))
    # a budget of 3 draws ends before the hand-over, as it ends the batched sampler
    with pytest.raises(NothingFound, match="found 0 in 3 draws"):
        pure.sample(path, n=3, seed=5, regex="[a-m].*a", max_tries=3)
    with pytest.raises(NothingFound, match="found 0 in 3 draws"):
        models["mlp"].sample(3, seed=5, regex="[a-m].*a", max_tries=3)


def _sample_in_a_fresh_process(path, *args) -> tuple[list[str], bool]:
    """The lines `makemore sample` prints, and whether torch was imported."""
    script = ("import sys; from makemore.cli import main; sys.argv = ['makemore'] + sys.argv[1:]\n"
              "try:\n    main()\nfinally:\n    print('torch' in sys.modules, file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", script, "sample", "--checkpoint", str(path), *args],
                          capture_output=True, text=True, check=True)
    return done.stdout.splitlines(), done.stderr.strip().splitlines()[-1] == "True"


def test_sample_command_does_not_import_torch_for_a_few_items(models):
    quick, quick_torch = _sample_in_a_fresh_process(models["mlp"].path, "-n", "20", "--seed", "3")
    assert not quick_torch
    assert quick == list(models["mlp"].sample(20, seed=3))
    # --json needs torch (log-probabilities): the same items come out
    full, full_torch = _sample_in_a_fresh_process(models["mlp"].path, "-n", "20", "--seed", "3", "--json")
    assert full_torch
    assert [json.loads(line)["item"] for line in full] == quick
