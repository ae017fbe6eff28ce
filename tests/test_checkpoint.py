"""The checkpoint format (safetensors + one JSON document, no pickle) and its loader, tried as a damaged disk and
an attacker would: every file either loads (and then loads whole, as the reference safetensors reader reads it)
or is refused with makemore's own one-line CheckpointError, quickly and without large allocations; through the
CLI, no command accepts a file that another refuses, and nothing hangs on a FIFO or a device."""
from __future__ import annotations

import copy
import json
import os
import random
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import safetensors
import safetensors.torch
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import invoke, ok
from makemore import api, checkpoint
from makemore import checkpoint_checks as checks
from makemore.data import MAX_VOCAB
from makemore.errors import CheckpointError
from makemore.models import MODELS, get_model_class

ROOT = Path(__file__).resolve().parents[1]
TINY_MLP = ["--model", "mlp", "--n-embd", "4", "--n-hidden", "16", "--batch-size", "16", "--block-size", "3",
            "--eval-interval", "5", "-q"]
FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """One small checkpoint of every kind: an mlp, a bigram-nn, a gru and a transformer with their training
    state (--resume), a bigram, an n-gram and a mixture; {name: path}, and the data file under "data"."""
    root = tmp_path_factory.mktemp("trained")
    data = root / "names.txt"
    data.write_text("\n".join((ROOT / "names.txt").read_text(encoding="utf-8").splitlines()[::50]) + "\n",
                    encoding="utf-8")
    out = root / "out"
    ok("train", *TINY_MLP, "--steps", 10, "--data", data, "--out", out)
    ok("train", "--model", "bigram-nn", "--steps", 5, "--data", data, "--out", out, "-q")
    ok("train", "--model", "bigram", "--data", data, "--out", out, "-q")
    ok("train", "--model", "ngram", "--block-size", 3, "--data", data, "--out", out, "-q")
    ok("mix", out / "ngram.safetensors", out / "mlp.safetensors", "--out", out)
    # the models that read whole items, with their training state: a recurrent net and a transformer
    ok("train", "--model", "gru", "--n-embd", 4, "--n-hidden", 6, "--steps", 5, "--data", data, "--out", out, "-q")
    ok("train", "--model", "transformer", "--n-embd", 8, "--n-head", 2, "--n-layer", 1, "--steps", 5, "--data", data,
       "--out", out, "-q")
    paths = {name: out / f"{name}.safetensors"
             for name in ("mlp", "bigram-nn", "bigram", "ngram", "mixture", "gru", "transformer")}
    paths["data"] = data
    return paths


# ------------------------------------------------------------------------------------ the file, byte by byte

def unpack(raw: bytes) -> tuple[dict, bytes]:
    """A safetensors file as its header (a dict) and its data bytes."""
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def pack(header: dict, data: bytes) -> bytes:
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data


def document(header: dict) -> dict:
    return json.loads(header["__metadata__"]["makemore"])


KEEP = object()


def seal(header: dict, data: bytes, doc=KEEP) -> bytes:
    """The file with the document doc (a dict, or JSON text) in place of its own, and a checksum that matches
    whatever the header and the data now say: what someone who knows the format writes."""
    header = copy.deepcopy(header)
    meta = header["__metadata__"]
    if doc is not KEEP:
        meta["makemore"] = doc if isinstance(doc, str) else json.dumps(doc)
    try:
        tensors = {}
        for name, entry in header.items():
            if name not in ("__metadata__", checkpoint.DIGEST):
                begin, end = entry["data_offsets"]
                tensors[name] = (entry["dtype"], entry["shape"], data[begin:end])
        begin, end = header[checkpoint.DIGEST]["data_offsets"]
        assert end - begin == 32
        digest = bytes.fromhex(checkpoint.digest(meta["makemore"], tensors))
        data = data[:begin] + digest + data[end:]
    except (KeyError, TypeError, ValueError, AttributeError, AssertionError, OverflowError):
        pass  # a header too broken to take a checksum of: the loader refuses it before it gets that far
    return pack(header, data)


def retensor(path: Path, change) -> bytes:
    """The checkpoint with change(tensors: {name: tensor}) applied to its tensors, sealed again."""
    header, data = unpack(path.read_bytes())
    tensors = safetensors.torch.load(path.read_bytes())
    change(tensors)
    raw = safetensors.torch.save(tensors, metadata=header["__metadata__"])
    new_header, new_data = unpack(raw)
    return seal(new_header, new_data)


def attempt(path: Path):
    """api.load(path): the Trained model, after one forward pass and a check that the reference safetensors
    reader reads the file too; or the CheckpointError's message, which must be one line starting with the path."""
    try:
        trained = api.load(path)
    except CheckpointError as e:
        message = str(e)
        assert "\n" not in message and message.startswith(f"{path}: "), message
        return message
    trained.model(torch.zeros(2, trained.block_size, dtype=torch.long))
    safetensors.torch.load(path.read_bytes())
    return trained


def refused(path: Path, *words) -> str:
    result = attempt(path)
    assert isinstance(result, str), f"{path} was accepted"
    for word in words:
        assert word in result, (word, result)
    return result


def same_checkpoint(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if key in ("state_dict",):
            assert a[key].keys() == b[key].keys() and all(torch.equal(a[key][k], b[key][k]) for k in a[key])
        elif key == "resume":
            same_training_state(a[key], b[key])
        else:
            assert a[key] == b[key], key


def same_training_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert torch.equal(a["rng"], b["rng"]) and a["elapsed"] == b["elapsed"] and a["world_size"] == b["world_size"]
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys() and all(type(k) is int for k in sa)
    for k in sa:
        assert sa[k].keys() == sb[k].keys()
        for name in sa[k]:
            x, y = sa[k][name], sb[k][name]
            assert torch.equal(x, y) and x.dtype == y.dtype if isinstance(x, torch.Tensor) else x == y
    ga, gb = a["optimizer"]["param_groups"], b["optimizer"]["param_groups"]
    assert ga == gb and [{k: type(v) for k, v in g.items()} for g in ga] == [{k: type(v) for k, v in g.items()}
                                                                           for g in gb]


# ---------------------------------------------------------------------------------------------- the format

def test_the_file_is_safetensors_with_one_json_document_and_no_pickle(trained):
    raw = trained["mlp"].read_bytes()
    header, data = unpack(raw)
    assert set(header["__metadata__"]) == {"makemore"}
    # standard JSON: no NaN or Infinity, readable by any JSON parser
    doc = json.loads(header["__metadata__"]["makemore"], parse_constant=lambda c: pytest.fail(c))
    assert set(doc) == set(checks.REQUIRED) | {"resume"}
    assert doc["format_version"] == checkpoint.FORMAT_VERSION == 3
    names = set(header) - {"__metadata__", checkpoint.DIGEST}
    assert {n for n in names if n.startswith("state_dict.")} == {f"state_dict.{k}" for k in
                                                                 ("C", "W1", "b1", "W2", "b2", "Wd")}
    assert {"items", "resume.rng"} <= names and any(n.startswith("resume.optimizer.state.0.") for n in names)
    # the reference reader reads every tensor, and what it reads is what makemore loads
    with safetensors.safe_open(trained["mlp"], framework="pt") as f:
        assert set(f.keys()) == names | {checkpoint.DIGEST} and f.metadata() == header["__metadata__"]
    reference = safetensors.torch.load(raw)
    ckpt = checkpoint.load(trained["mlp"])
    assert all(torch.equal(reference[f"state_dict.{k}"], v) for k, v in ckpt["state_dict"].items())
    assert bytes(reference["items"].tolist()).decode() == ckpt["items"]
    assert ckpt["items"].split("\n") == trained["data"].read_text().split()
    assert b"\x80\x02" not in raw[:16] and not raw.startswith(b"PK")


def test_no_pickle_anywhere_in_makemore():
    for source in (ROOT / "makemore").rglob("*.py"):
        text = source.read_text(encoding="utf-8")
        for banned in ("import pickle", "zipfile", "torch.load(", "torch.save(", "weights_only"):
            assert banned not in text, (source, banned)
    text = (ROOT / "makemore" / "checkpoint.py").read_text(encoding="utf-8")
    assert not re.search(r"torch\._|torch\.ops", text)


@pytest.fixture(scope="module")
def every_model(tmp_path_factory) -> dict[str, Path]:
    """A checkpoint of every registered model at its defaults, as its run saved it (with its training state
    where it has one), and a mixture of two: {name: path}."""
    root = tmp_path_factory.mktemp("every")
    data = root / "names.txt"
    data.write_text("\n".join((ROOT / "names.txt").read_text(encoding="utf-8").splitlines()[::50]) + "\n",
                    encoding="utf-8")
    paths = {model: api.train(model, data, root / "out", train_options={} if get_model_class(model).counts
                              else dict(steps=2), device="cpu", progress=False, n_threads=1).path for model in MODELS}
    paths["mixture"] = api.mix([paths["bigram"], paths["mlp"]], out=root / "mixed").path
    return paths


@pytest.mark.parametrize("model", [*MODELS, "mixture"])
def test_what_save_writes_loads_and_saves_again_to_the_same_bytes(every_model, tmp_path, model):
    """save() checks nothing, load() does: what a run or a mix saved loads, with its training state when the
    model trains step by step, and saving it again writes the same bytes (the format is deterministic)."""
    ckpt = checkpoint.load(every_model[model])
    assert ("resume" in ckpt) == (model != "mixture" and not get_model_class(model).counts)
    again = tmp_path / f"again{checkpoint.SUFFIX}"
    checkpoint.save(ckpt, again)
    assert again.read_bytes() == every_model[model].read_bytes()
    same_checkpoint(ckpt, checkpoint.load(again))


def test_optimizer_state_round_trips_exactly(trained, tmp_path):
    """int keys, tuples, ints and floats, the step tensors' dtype: all as torch.optim made them."""
    ckpt = checkpoint.load(trained["mlp"])
    net = api.load(trained["mlp"]).model
    for name, optimizer in (("adamw", torch.optim.AdamW(net.parameters(), lr=0.01, fused=True)),
                            ("sgd", torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, foreach=True)),
                            ("sgd", torch.optim.SGD(net.parameters(), lr=0.1))):  # momentum_buffer None
        for _ in range(2):
            net(torch.zeros(4, net.block_size, dtype=torch.long)).sum().backward()
            optimizer.step()
        made = optimizer.state_dict()
        resume = dict(state_dict=net.state_dict(), optimizer=made, rng=torch.Generator().get_state(),
                      elapsed=1.5, world_size=2)
        path = tmp_path / f"{name}{checkpoint.SUFFIX}"
        checkpoint.save(dict(ckpt, train=dict(ckpt["train"], optimizer=name), resume=resume), path)
        same_training_state(checkpoint.load(path)["resume"], resume)


def test_resume_state_survives_the_file(trained):
    """What the loop hands the optimizer is what torch.optim made: int keys, a tuple for betas."""
    ckpt = checkpoint.load(trained["mlp"])
    opt = ckpt["resume"]["optimizer"]
    assert sorted(opt["state"]) == list(range(6)) and all(isinstance(k, int) for k in opt["state"])
    group = opt["param_groups"][0]
    assert isinstance(group["betas"], tuple) and group["params"] == list(range(6))
    net = api.load(trained["mlp"]).model
    fresh = torch.optim.AdamW(net.parameters(), lr=0.1, fused=True)
    fresh.load_state_dict(opt)
    assert fresh.state_dict()["param_groups"] == opt["param_groups"]
    torch.Generator().set_state(ckpt["resume"]["rng"])


def test_latest_finds_the_new_files_and_the_pointer(tmp_path, trained):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.pt").write_bytes(b"PK\x03\x04")
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        checkpoint.latest(out)
    (out / f"a{checkpoint.SUFFIX}").write_bytes(trained["bigram"].read_bytes())
    assert checkpoint.latest(out).name == f"a{checkpoint.SUFFIX}"
    checkpoint.write_latest(out, out / "old.pt")
    assert checkpoint.latest(out).name == "old.pt"  # named by the pointer: refused on load, with a reason
    refused(out / "old.pt", "older makemore", "format 1", "makemore train")


def test_a_torch_save_archive_is_refused_without_running_or_reading_it(tmp_path, trained):
    """The old format: a zip archive with a pickle. Nothing in it is read, not even the 40 MB of zeros."""
    marker = tmp_path / "code-ran"
    path = tmp_path / "old.pt"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save(dict(model="mlp", config=Payload(), zeros=torch.zeros(10**7)), path)
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data/huge", b"\x00" * 40_000_000)
    message = refused(path, "older makemore", "format 1", "train the model again")
    assert "\n" not in message and not marker.exists()


def test_a_huge_training_set_saves_and_loads_in_seconds(tmp_path, trained, model="mlp"):
    """3.2 million items of about 7 characters, kept in the checkpoint for --new."""
    n = 3_200_000
    letters = torch.randint(ord("a"), ord("z") + 1, (n, 7), generator=torch.Generator().manual_seed(0))
    lines = torch.cat([letters, torch.full((n, 1), ord("\n"))], 1).flatten()[:-1].to(torch.uint8)
    items = bytes(lines.numpy()).decode()
    src = checkpoint.load(trained[model])
    ckpt = checkpoint.build(**{k: src[k] for k in ("model", "config", "vocab", "train", "split", "state_dict",
                                                   "step", "best_dev_loss", "metrics")},
                            data=dict(src["data"], n_items=n), items=items, resume=src.get("resume"))
    path = tmp_path / f"big{checkpoint.SUFFIX}"
    t0 = time.perf_counter()
    checkpoint.save(ckpt, path)
    loaded = api.load(path)
    seconds = time.perf_counter() - t0
    assert loaded.ckpt["items"] == items and len(loaded.items()) == n
    assert seconds < 10, seconds


# ------------------------------------------------------------------------------- damaged on disk (no reseal)

def loads_as_the_original(path: Path, original: Path) -> None:
    """A file that still loads after damage must hold exactly what the original held (the checksum)."""
    result = attempt(path)
    if not isinstance(result, str):
        same_checkpoint(checkpoint.load(path), checkpoint.load(original))


@FUZZ
@given(data=st.data())
def test_flipped_bytes_are_noticed(trained, tmp_path, data):
    model = data.draw(st.sampled_from(["mlp", "ngram", "mixture", "transformer"]))
    raw = bytearray(trained[model].read_bytes())
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.integers(0, len(raw) - 1))
        raw[where] ^= data.draw(st.integers(1, 255))
    path = tmp_path / f"flipped{checkpoint.SUFFIX}"
    path.write_bytes(bytes(raw))
    loads_as_the_original(path, trained[model])


@FUZZ
@given(data=st.data())
def test_truncated_or_extended_files_are_refused(trained, tmp_path, data):
    raw = trained["mlp"].read_bytes()
    if data.draw(st.booleans()):
        raw = raw[:data.draw(st.integers(0, len(raw) - 1))]
    else:
        raw = raw + data.draw(st.binary(min_size=1, max_size=64))
    path = tmp_path / f"cut{checkpoint.SUFFIX}"
    path.write_bytes(raw)
    refused(path)


# ------------------------------------------------------------------------------- crafted (sealed again)

DTYPES = ["F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL", "U64", "F8_E4M3", "C64", "", 7]
SIZES = st.one_of(st.integers(0, 40), st.sampled_from([-1, 2**26, 10**9, 2 * 10**8, 2**31, 2**63, 2**64, 10**30]))


@FUZZ
@given(data=st.data())
def test_header_offsets_shapes_and_dtypes_changed(trained, tmp_path, data):
    model = data.draw(st.sampled_from(["mlp", "ngram", "bigram-nn", "gru", "transformer"]))
    header, body = unpack(trained[model].read_bytes())
    name = data.draw(st.sampled_from(sorted(set(header) - {"__metadata__"})))
    entry = header[name]
    what = data.draw(st.sampled_from(["offsets", "shape", "dtype", "dtype+shape", "entry", "name"]))
    if what == "offsets":
        entry["data_offsets"] = [data.draw(SIZES), data.draw(SIZES)]
    elif what in ("shape", "dtype+shape"):
        entry["shape"] = data.draw(st.lists(SIZES, max_size=4))
    if what in ("dtype", "dtype+shape"):
        entry["dtype"] = data.draw(st.sampled_from(DTYPES))
    if what == "entry":
        header[name] = data.draw(st.sampled_from([None, [], "x", {}, {"dtype": "F32"}, 1, dict(entry, extra=1)]))
    if what == "name":
        header[data.draw(st.sampled_from(["../../etc/passwd", "state_dict.evil", "", "state_dict.C.x",
                                          "resume.optimizer.state.99.step", "__metadata__x"]))] = header.pop(name)
    path = tmp_path / f"header{checkpoint.SUFFIX}"
    path.write_bytes(seal(header, body))
    attempt(path)


def _json_paths(value, prefix=()):
    """Every place in a JSON document: the paths of its values (metrics: the first record only)."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _json_paths(item, prefix + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value[:1] if prefix == ("metrics",) else value[:4]):
            yield from _json_paths(item, prefix + (i,))


def _replaced(doc, where: tuple, value):
    doc = copy.deepcopy(doc)
    if not where:
        return value
    parent = doc
    for key in where[:-1]:
        parent = parent[key]
    parent[where[-1]] = value
    return doc


JSON_TYPES = [None, True, 0, -1, 1, 2.5, 1e308, 2**63, 10**30, "", "x", "kn", [], [1, 2], [0.8, 0.1, 0.1], {},
              {"a": 1}]


@pytest.mark.parametrize("model", ["mlp", "ngram", "bigram", "mixture", "gru", "transformer"])
@pytest.mark.slow
def test_every_json_field_replaced_by_every_json_type(trained, tmp_path, model):
    """Each value of the document, in turn, replaced by each kind of JSON value; also removed, and a key
    added beside it. Every file loads or is refused with a one-line CheckpointError."""
    header, body = unpack(trained[model].read_bytes())
    doc = document(header)
    path = tmp_path / f"field{checkpoint.SUFFIX}"
    tried = 0
    t0 = time.perf_counter()
    for where in list(_json_paths(doc)):
        variants = [_replaced(doc, where, value) for value in JSON_TYPES]
        if where:
            parent = _replaced(doc, (), doc)
            for key in where[:-1]:
                parent = parent[key]
            if isinstance(parent, dict):
                gone = copy.deepcopy(doc)
                target = gone
                for key in where[:-1]:
                    target = target[key]
                del target[where[-1]]
                variants.append(gone)
        for variant in variants:
            path.write_bytes(seal(header, body, variant))
            result = attempt(path)
            assert not isinstance(result, str) or "checksum" not in result, result  # sealed: refused for its content
            tried += 1
    assert tried > 200 and time.perf_counter() - t0 < 60


def json_values():
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.sampled_from(JSON_TYPES),
                        st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) |
                        st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


@FUZZ
@given(data=st.data())
def test_random_json_in_random_places(trained, tmp_path, data):
    model = data.draw(st.sampled_from(["mlp", "ngram", "mixture", "bigram-nn", "gru", "transformer"]))
    header, body = unpack(trained[model].read_bytes())
    doc = document(header)
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.sampled_from(list(_json_paths(doc))))
        doc = _replaced(doc, where, data.draw(json_values()))
    path = tmp_path / f"random{checkpoint.SUFFIX}"
    path.write_bytes(seal(header, body, doc))
    result = attempt(path)
    assert not isinstance(result, str) or "checksum" not in result, result


@pytest.mark.parametrize("depth", [30, 1000, 100_000])
@pytest.mark.parametrize("where", [("config",), ("metrics",), ("split", "seed"), ("resume", "optimizer", "state")])
def test_deep_nesting(trained, tmp_path, where, depth):
    header, body = unpack(trained["mlp"].read_bytes())
    text = json.dumps(_replaced(document(header), where, "NEST")).replace('"NEST"', "[" * depth + "]" * depth)
    path = tmp_path / f"deep{checkpoint.SUFFIX}"
    path.write_bytes(seal(header, body, text))
    refused(path)


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "9" * 5000, "1" + "0" * 400])
@pytest.mark.parametrize("where", [("step",), ("best_dev_loss",), ("config", "n_hidden"), ("train", "lr"),
                                   ("split", "seed"), ("data", "n_items")])
def test_huge_numbers_and_not_numbers(trained, tmp_path, where, text):
    header, body = unpack(trained["mlp"].read_bytes())
    raw = json.dumps(_replaced(document(header), where, "NUMBER")).replace('"NUMBER"', text)
    path = tmp_path / f"number{checkpoint.SUFFIX}"
    path.write_bytes(seal(header, body, raw))
    refused(path)


# ---- what broke before (issue 19), one by one

def _doc_change(where: tuple, value):
    return lambda doc: _replaced(doc, where, value)


def _del(*where):
    def change(doc):
        target = doc
        for key in where[:-1]:
            target = target[key]
        del target[where[-1]]
        return doc
    return change


CRAFTED = {
    # name: (model, change of the document or None, change of the tensors or None, words of the refusal)
    "weights-not-the-config": ("mlp", _doc_change(("config", "n_hidden"), 17), None, ["does not fit", "W1"]),
    "n_hidden-2-million": ("mlp", _doc_change(("config", "n_hidden"), 2_000_000), None, ["n-hidden"]),
    "n_hidden-1-million": ("mlp", _doc_change(("config", "n_hidden"), 1_000_000), None, ["does not fit"]),
    "vocab-shorter": ("mlp", _doc_change(("vocab",), ".abcd"), None, ["does not fit"]),
    "empty-vocab": ("bigram", _doc_change(("vocab",), ""), None, ["vocab"]),
    "vocab-of-one": ("ngram", _doc_change(("vocab",), "."), None, ["vocab"]),
    "vocab-duplicates": ("ngram", _doc_change(("vocab",), ".aab"), None, ["vocab"]),
    "vocab-huge": ("bigram", _doc_change(("vocab",), "".join(map(chr, range(32, 32 + 20_000)))), None,
                   ["vocab"]),
    "negative-smoothing": ("bigram", _doc_change(("config", "smoothing"), -1), None, ["smoothing"]),
    "ngram-block-size-100000": ("ngram", _doc_change(("config", "block_size"), 100_000), None, ["block-size"]),
    "unknown-model": ("mlp", _doc_change(("model",), "gpt9"), None, ["gpt9", "upgrade"]),
    "newer-format": ("mlp", _doc_change(("format_version",), 4), None, ["newer makemore", "format 4", "upgrade"]),
    "format-1-in-safetensors": ("mlp", _doc_change(("format_version",), 1), None, ["older makemore", "format 1"]),
    "format-2": ("transformer", _doc_change(("format_version",), 2), None,
                 ["older makemore (checkpoint format 2)", "train the model again"]),
    "config-lacks-an-option": ("mlp", _del("config", "n_hidden"), None, ["lacks", "n-hidden"]),
    "train-lacks-a-setting": ("mlp", _del("train", "weight_decay"), None, ["lacks", "weight-decay"]),
    "extra-json-key": ("mlp", _doc_change(("evil",), 1), None, ["unexpected entry", "evil"]),
    "items-in-json": ("mlp", _doc_change(("items",), {"a": 1}), None, ["unexpected entry", "items"]),
    "data-without-path": ("mlp", _del("data", "path"), None, ["incomplete", "path"]),
    "list-as-split-seed": ("mlp", _doc_change(("split", "seed"), [1, 2]), None, ["split seed"]),
    "string-as-step": ("mlp", _doc_change(("step",), "12"), None, ["step"]),
    "string-as-best-dev-loss": ("mlp", _doc_change(("best_dev_loss",), "low"), None, ["best_dev_loss"]),
    "incomplete": ("mlp", _del("vocab"), None, ["incomplete", "vocab"]),
    "nul-in-data-path": ("mlp", _doc_change(("data", "path"), "/tmp/a\x00b"), None, ["data path"]),
    "data-path-name-too-long": ("mlp", _doc_change(("data", "path"), "/tmp/" + "a" * 300 + "/x.txt"), None,
                                ["data path"]),
    "lone-surrogate": ("mlp", _doc_change(("makemore_version",), "\ud800"), None, ["Unicode"]),
    "split-would-be-empty": ("mlp", _doc_change(("split", "fractions"), [0.9999, 0.00005, 0.00005]), None,
                             ["empty"]),
    "resume-on-a-counting-model": ("ngram", lambda d: dict(d, resume={"elapsed": 0, "world_size": 1,
                                                                      "optimizer": {}}), None, ["resume"]),
    "optimizer-two-groups": ("mlp", lambda d: _replaced(d, ("resume", "optimizer", "param_groups"),
                                                        d["resume"]["optimizer"]["param_groups"] * 2), None,
                             ["parameter group"]),
    "optimizer-of-another-kind": ("mlp", _doc_change(("train", "optimizer"), "sgd"), None, ["optimizer"]),
    "optimizer-param-beyond": ("mlp", _doc_change(("resume", "optimizer", "state", "6"), {}), None, ["parameter"]),
    "optimizer-param-superscript": ("mlp", _doc_change(("resume", "optimizer", "state", "\u00b2"), {}), None,
                                    ["parameter"]),
    "metrics-record-without-train-loss": ("mlp", _del("metrics", 0, "train_loss"), None, ["lacks", "train_loss"]),
    "metrics-record-of-text": ("mlp", _doc_change(("metrics", 0, "dev_loss"), "low"), None,
                               ["metrics 'dev_loss'", "'low'"]),
    "mixture-without-kind": ("mixture", _del("config", "kind"), None, ["kind"]),
    "extra-tensor": ("mlp", None, lambda t: t.update(evil=torch.zeros(3)), ["unexpected tensor", "evil"]),
    "dotdot-tensor-name": ("mlp", None, lambda t: t.update({"../../etc/passwd": torch.zeros(1)}),
                           ["unexpected tensor"]),
    "missing-tensor": ("mlp", None, lambda t: t.pop("state_dict.W2"), ["lacks", "W2"]),
    "embedding-of-200-million-rows": ("mlp", None, lambda t: t.update({"state_dict.C": torch.zeros(2, 4)}),
                                      ["does not fit", "C"]),
    "weights-as-float64": ("mlp", None, lambda t: t.update({"state_dict.W1": t["state_dict.W1"].double()}),
                           ["does not fit", "W1"]),
    "nan-weights": ("mlp", None, lambda t: t["state_dict.b1"].fill_(float("nan")), ["not finite"]),
    "items-not-bytes": ("mlp", None, lambda t: t.update(items=t["items"].float()), ["does not fit", "items"]),
    "items-not-utf8": ("mlp", None, lambda t: t.update(items=torch.full((10,), 0xFF, dtype=torch.uint8)),
                       ["UTF-8"]),
    "items-outside-the-vocabulary": ("mlp", None, lambda t: t["items"].__setitem__(0, ord("Q")), ["vocabulary"]),
    "items-hold-the-boundary": ("mlp", None, lambda t: t["items"].__setitem__(0, ord(".")), ["vocabulary"]),
    "rng-not-a-generator-state": ("mlp", None, lambda t: t["resume.rng"].zero_(), ["random state"]),
    "rng-of-another-size": ("mlp", None, lambda t: t.update({"resume.rng": torch.zeros(7, dtype=torch.uint8)}),
                            ["rng"]),
    "optimizer-step-negative": ("mlp", None, lambda t: t["resume.optimizer.state.0.step"].fill_(-1), ["step"]),
    "ngram-keys-out-of-range": ("ngram", None, lambda t: t["state_dict.ngrams_2"].fill_(10**6), ["does not fit"]),
    "ngram-counts-negative": ("ngram", None, lambda t: t["state_dict.counts_1"].fill_(-5), ["does not fit"]),
    "ngram-table-lengths-differ": ("ngram", None, lambda t: t.update(
        {"state_dict.counts_2": t["state_dict.counts_2"][:-1].clone()}), ["does not fit"]),
    "mixture-component-unknown": ("mixture", _doc_change(("config", "components", 0, "model"), "gpt9"), None,
                                  ["gpt9"]),
    "mixture-nested-deeply": ("mixture", lambda d: _replaced(d, ("config",), _nest(d["config"], 8)), None,
                              ["deep"]),
}


def _nest(config: dict, depth: int) -> dict:
    for _ in range(depth):
        config = {"components": [{"model": "mixture", "config": config}], "weights": [1.0]}
    return config


def craft(name: str, trained: dict, where: Path) -> Path:
    model, change_doc, change_tensors, _ = CRAFTED[name]
    path = where / f"{name}{checkpoint.SUFFIX}"
    source = trained[model]
    if change_tensors is not None:
        tmp = where / f"tmp-{name}{checkpoint.SUFFIX}"
        tmp.write_bytes(retensor(source, change_tensors))
        source = tmp
    header, body = unpack(source.read_bytes())
    doc = change_doc(document(header)) if change_doc is not None else KEEP
    path.write_bytes(seal(header, body, doc))
    return path


@pytest.mark.parametrize("name", CRAFTED)
def test_what_broke_before_is_one_line_now(trained, tmp_path, name):
    path = craft(name, trained, tmp_path)
    t0 = time.perf_counter()
    refused(path, *CRAFTED[name][3])
    assert time.perf_counter() - t0 < 2


@pytest.mark.parametrize("settings, step, words", [
    (dict(capturable=True), None, "capturable is True; makemore trains with False; it cannot be resumed"),
    (dict(fused=True, foreach=True), None, "asks for both fused and foreach steps"),
    (dict(fused=True, foreach=True), 0, "asks for both fused and foreach steps"),  # a state the loop would load
    (dict(lr=None), None, "lr is None; makemore trains with"),
    (dict(betas=[0.9]), None, "betas is (0.9,); makemore trains with (0.9, 0.999)"),
])
def test_an_optimizer_setting_the_loop_does_not_use_is_refused_by_resume_only(trained, tmp_path, settings, step,
                                                                               words):
    """The optimizer's settings differ between torch versions, so load checks their types and train --resume
    compares them with the optimizer it makes: sampling such a file works, resuming it is one line, exit 1."""
    header, body = unpack(trained["mlp"].read_bytes())
    doc = document(header)
    doc["resume"]["optimizer"]["param_groups"][0].update(settings)
    doc["step"] = doc["step"] if step is None else step
    path = tmp_path / f"settings{checkpoint.SUFFIX}"
    path.write_bytes(seal(header, body, doc))
    assert not isinstance(attempt(path), str)
    result = invoke("train", "--resume", "--checkpoint", path, "--steps", 15, "--out", tmp_path / "resumed", "-q")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


DAMAGED = {
    "empty": lambda raw: b"",
    "seven-bytes": lambda raw: raw[:7],
    "half": lambda raw: raw[: len(raw) // 2],
    "text": lambda raw: b"anna\nbob\n",
    "random": lambda raw: random.Random(0).randbytes(len(raw)),
    "header-length-huge": lambda raw: (2**63).to_bytes(8, "little") + raw[8:],
    "header-length-past-the-end": lambda raw: (len(raw)).to_bytes(8, "little") + raw[8:],
    "junk-before-the-data": lambda raw: _junk_before_data(raw),
    "junk-at-the-end": lambda raw: raw + b"\x00" * 16,
    "offsets-beyond-the-file": lambda raw: _offsets(raw, lambda o: [o[0], o[1] + 10**9]),
    "offsets-overlapping": lambda raw: _offsets(raw, lambda o: [max(0, o[0] - 4), o[1] - 4]),
    "1-element-as-a-billion": lambda raw: _shape(raw, [1, 10**9]),
    "shape-200-million-rows": lambda raw: _shape(raw, [2 * 10**8, 32]),
    "not-makemore-safetensors": lambda raw: safetensors.torch.save({"x": torch.zeros(3)}),
    "zip": lambda raw: b"PK\x03\x04" + raw,
    "a-key-twice": lambda raw: _twice(raw),
}


def _twice(raw: bytes) -> bytes:
    """The document with "vocab" given twice: which one counts would depend on the reader."""
    header, data = unpack(raw)
    text = json.dumps(document(header))
    return seal(header, data, text[:-1] + ', "vocab": ".ab"}')


def _junk_before_data(raw: bytes) -> bytes:
    header, data = unpack(raw)
    return seal(header, b"JUNK" * 4 + data)


def _offsets(raw: bytes, change) -> bytes:
    header, data = unpack(raw)
    name = max((n for n in header if n != "__metadata__"), key=lambda n: header[n]["data_offsets"][1])
    header[name]["data_offsets"] = change(header[name]["data_offsets"])
    return seal(header, data)


def _shape(raw: bytes, shape: list) -> bytes:
    header, data = unpack(raw)
    header["state_dict.C"]["shape"] = shape
    return seal(header, data)


@pytest.mark.parametrize("kind", DAMAGED)
def test_damaged_and_foreign_files_are_refused(trained, tmp_path, kind):
    path = tmp_path / f"{kind}{checkpoint.SUFFIX}"
    path.write_bytes(DAMAGED[kind](trained["mlp"].read_bytes()))
    refused(path)


def test_a_flipped_bit_in_the_weights_is_a_checksum_error(trained, tmp_path):
    raw = bytearray(trained["mlp"].read_bytes())
    header, _ = unpack(bytes(raw))
    begin, end = header["state_dict.W1"]["data_offsets"]
    raw[8 + int.from_bytes(raw[:8], "little") + (begin + end) // 2] ^= 0x04
    path = tmp_path / f"flipped{checkpoint.SUFFIX}"
    path.write_bytes(bytes(raw))
    refused(path, "damaged", "checksum")


# ------------------------------------------------------------------------------------- paths that are no file

def test_paths_that_are_not_regular_files_are_refused_unread(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    zero = tmp_path / f"zero{checkpoint.SUFFIX}"
    zero.symlink_to("/dev/zero")
    for path, words in ((tmp_path, ["is a directory"]), (fifo, ["not a regular file"]),
                        (zero, ["not a regular file"]), (Path("/dev/null"), ["not a regular file"]),
                        (tmp_path / "none", ["no such checkpoint"])):
        with pytest.raises(CheckpointError) as e:
            checkpoint.load(path)
        assert all(w in str(e.value) for w in words) and str(e.value).startswith(str(path))


def run_cli(*args, timeout=60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), MAKEMORE_DEBUG="", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "makemore", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("command", [["sample", "--checkpoint"], ["eval", "--checkpoint"], ["inspect"],
                                     ["train", "--resume", "--checkpoint"]])
@pytest.mark.slow
def test_a_fifo_or_a_device_as_checkpoint_never_hangs(tmp_path, command):
    fifo = tmp_path / f"fifo{checkpoint.SUFFIX}"
    os.mkfifo(fifo)
    zero = tmp_path / f"zero{checkpoint.SUFFIX}"
    zero.symlink_to("/dev/zero")
    for path in (fifo, zero):
        result = run_cli(*command, path)  # a read would block (FIFO) or never end (/dev/zero): the timeout
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1, result.stderr
        assert lines[0].startswith(f"Error: {path}: ") and "not a regular file" in lines[0]


def fifo_data(trained, tmp_path) -> Path:
    """A good checkpoint whose recorded data path is a FIFO."""
    fifo = tmp_path / "names.txt"
    os.mkfifo(fifo)
    header, body = unpack(trained["bigram"].read_bytes())
    path = tmp_path / f"fifo-data{checkpoint.SUFFIX}"
    path.write_bytes(seal(header, body, _replaced(document(header), ("data", "path"), str(fifo))))
    return path


def test_a_recorded_data_path_that_is_a_fifo_is_not_read_by_inspect(trained, tmp_path):
    result = run_cli("inspect", "--json", fifo_data(trained, tmp_path), timeout=60)
    assert result.returncode == 0 and json.loads(result.stdout)["data"]["status"] == "unreadable", result.stderr


def test_a_recorded_data_path_that_is_a_fifo_is_not_read_by_eval(trained, tmp_path):
    result = run_cli("eval", "--checkpoint", fifo_data(trained, tmp_path), timeout=20)
    assert result.returncode == 0, result.stderr


# ------------------------------------------------------------------------------------ through the CLI

COMMANDS = (["sample", "-n", "2", "--seed", "1", "--checkpoint"], ["sample", "--json", "-n", "2", "--seed", "1",
                                                                    "--checkpoint"],
            ["eval", "--checkpoint"], ["inspect"], ["inspect", "--json"])


def verdicts(path: Path) -> list[str]:
    """Each command's verdict on path: "ok", or its one-line error (never a traceback)."""
    out = []
    for command in COMMANDS:
        result = invoke(*command, path)
        if result.exit_code == 0:
            out.append("ok")
            continue
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("Error: "), result.output
        assert "Traceback" not in result.output
        out.append(lines[0])
    return out


@pytest.mark.parametrize("name", [*CRAFTED, *DAMAGED, "good-mlp", "good-ngram", "good-mixture"])
def test_every_command_gives_the_same_verdict(trained, tmp_path, name):
    if name.startswith("good-"):
        path = trained[name[5:]]
    elif name in DAMAGED:
        path = tmp_path / f"{name}{checkpoint.SUFFIX}"
        path.write_bytes(DAMAGED[name](trained["mlp"].read_bytes()))
    else:
        path = craft(name, trained, tmp_path)
    found = verdicts(path)
    assert len(set(found)) == 1, found
    assert (found[0] == "ok") == name.startswith("good-"), found
    if found[0] != "ok":
        assert found[0].startswith(f"Error: {path}: ")


@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_command_agrees_on_random_json(trained, tmp_path, data):
    model = data.draw(st.sampled_from(["mlp", "ngram", "mixture"]))
    header, body = unpack(trained[model].read_bytes())
    doc = document(header)
    paths = [p for p in _json_paths(doc) if p[:1] not in (("data",),)]  # eval reads the data file it names
    doc = _replaced(doc, data.draw(st.sampled_from(paths)), data.draw(json_values()))
    path = tmp_path / f"cli{checkpoint.SUFFIX}"
    path.write_bytes(seal(header, body, doc))
    found = verdicts(path)
    assert len({v == "ok" for v in found}) == 1, found


MEMORY_SCRIPT = r"""
import resource, sys
from makemore.cli import cli
for path in sys.argv[1:]:
    for args in (["sample", "-n", "2", "--checkpoint", path], ["eval", "--checkpoint", path], ["inspect", path]):
        try:
            cli.main(args, prog_name="makemore", standalone_mode=False)
        except Exception as e:
            if type(e).__name__ not in ("CheckpointError", "ClickException", "UsageError"):
                raise
print("peak", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def largest(trained: dict, where: Path) -> list[Path]:
    """Valid checkpoints at the limits: a bigram of the largest vocabulary, and an untrained default mlp
    with its training state (about the size of a trained one)."""
    from makemore.models import get_model_class

    src = checkpoint.load(trained["bigram"])
    vocab = "." + "".join(chr(0x4E00 + i) for i in range(MAX_VOCAB - 1))
    rng = random.Random(0)
    items = ["".join(rng.choices(vocab[1:], k=rng.randint(2, 6))) for _ in range(200)]
    cls = get_model_class("bigram")
    bigram = cls(cls.config_from({}), len(vocab))
    keep = {k: src[k] for k in ("train", "split", "step", "best_dev_loss", "metrics")}
    paths = [where / f"largest-vocabulary{checkpoint.SUFFIX}", where / f"default-mlp{checkpoint.SUFFIX}"]
    checkpoint.save(checkpoint.build(model="bigram", config=bigram.config, vocab=vocab, items=items,
                                     data=dict(path=str(where / "gone.txt"), fingerprint="00", n_items=len(items)),
                                     state_dict=bigram.state_dict(), **keep), paths[0])
    mlp_src = checkpoint.load(trained["mlp"])
    cls = get_model_class("mlp")
    net = cls(cls.config_from({}), len(mlp_src["vocab"]))
    optimizer = torch.optim.AdamW(net.parameters(), lr=0.01, fused=True)
    net(torch.zeros(4, net.block_size, dtype=torch.long)).sum().backward()
    optimizer.step()
    resume = dict(state_dict=net.state_dict(), optimizer=optimizer.state_dict(), rng=torch.Generator().get_state(),
                  elapsed=1.0)
    checkpoint.save(checkpoint.build(**{k: mlp_src[k] for k in ("model", "vocab", "train", "split", "data", "items",
                                                                 "step", "best_dev_loss", "metrics")},
                                     config=net.config, state_dict=net.state_dict(), resume=resume), paths[1])
    return paths


@pytest.mark.slow
def test_peak_memory_stays_under_1_2_gigabytes(trained, tmp_path):
    """Every crafted file, the good ones and the largest ones, through sample, eval and inspect in one
    process."""
    paths = [craft(name, trained, tmp_path) for name in CRAFTED]
    for kind, make in DAMAGED.items():
        paths.append(tmp_path / f"{kind}{checkpoint.SUFFIX}")
        paths[-1].write_bytes(make(trained["mlp"].read_bytes()))
    paths += [trained[m] for m in ("mlp", "ngram", "bigram", "bigram-nn", "mixture")]
    paths += largest(trained, tmp_path)
    for path in paths[-2:]:
        assert not isinstance(attempt(path), str)
    assert all(p.stat().st_size < 2_200_000 for p in paths)
    env = dict(os.environ, PYTHONPATH=str(ROOT), MAKEMORE_DEBUG="", OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, *map(str, paths)], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    peak_kb = int(result.stdout.split("peak")[-1])
    # measured 0.40 GB when this test runs alone, 0.95-1.02 GB after the rest of this file (the cause is not
    # found yet: the peak is reached by the first crafted files)
    assert peak_kb < 1_200_000, peak_kb
    print(f"peak memory {peak_kb / 1024:.0f} MB")


ACCEPTED = {
    # changes of a training state that the loader accepts: train --resume must then train from them
    "not-fused": ("param_groups", 0, "fused", False),
    "foreach": lambda doc: doc["resume"]["optimizer"]["param_groups"][0].update(fused=None, foreach=True),
    "no-state-for-a-parameter": lambda doc: doc["resume"]["optimizer"]["state"].update({"0": {}}),
    "another-lr": ("param_groups", 0, "lr", 5.0),
    "int-weight-decay": ("param_groups", 0, "weight_decay", 0),
    "more-processes": lambda doc: doc["resume"].update(world_size=4),
}


@pytest.mark.parametrize("name", ACCEPTED)
def test_train_resume_takes_what_the_loader_accepts(trained, tmp_path, name):
    header, body = unpack(trained["mlp"].read_bytes())
    doc = document(header)
    change = ACCEPTED[name]
    if callable(change):
        change(doc)
    else:
        doc = _replaced(doc, ("resume", "optimizer", *change[:-1]), change[-1])
    path = tmp_path / f"{name}{checkpoint.SUFFIX}"
    path.write_bytes(seal(header, body, doc))
    assert not isinstance(attempt(path), str)
    result = invoke("train", "--resume", "--checkpoint", path, "--steps", 15, "--out", tmp_path / "resumed", "-q")
    assert result.exit_code in (0, 1) and "Traceback" not in result.output, result.output
    if result.exit_code == 1:  # a learning rate of 5 may diverge: said in one line
        assert len(result.stderr.strip().splitlines()) == 1 and "diverged" in result.stderr, result.stderr
    else:
        assert checkpoint.load(tmp_path / "resumed" / path.name)["step"] == 15


def test_finite_weights_that_predict_nothing_are_refused_by_every_command(tmp_path, small_names):
    """A BatchNorm variance below zero is a finite number, but the model's predictions become NaN."""
    result = api.train("wavenet", small_names, tmp_path / "out", model_options=dict(block_size=4, n_embd=4, n_hidden=8),
                       train_options=dict(steps=20), device="cpu", progress=False)
    ckpt = checkpoint.load(result.path)
    assert verdicts(result.path) == ["ok"] * len(COMMANDS)
    ckpt["state_dict"]["levels.0.norm.running_var"].fill_(-1.0)
    bad = tmp_path / f"negative-variance{checkpoint.SUFFIX}"
    checkpoint.save(ckpt, bad)
    found = verdicts(bad)
    assert len(set(found)) == 1 and "predictions are not numbers" in found[0], found
