"""Loading a checkpoint (issue 29): the work a small valid file implies is bounded before it starts (the
header's length and its tensors before safetensors parses them, the tensors' bytes against the memory the
process may use before the file is mapped, the items against the data limits, a mixture's nesting and its
number of models from its config), and the model is built without initialising the weights that the file
then replaces, to the same weights bit for bit and the same losses."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import REPO_NAMES, invoke, ok
from makemore import api, checkpoint
from makemore import checkpoint_checks as checks
from makemore.data import MAX_DATA_BYTES, MAX_ITEM_CHARS, first_too_long
from makemore.models import get_model_class
from makemore.models.mixture import MAX_COMPONENTS, MAX_DEPTH, MAX_MODELS
from test_checkpoint import attempt, document, pack, refused, seal, unpack

ROOT = Path(__file__).resolve().parents[1]
# every model, tiny: (model options, train options)
TINY = {"bigram": ({}, {}), "ngram": ({"block_size": 3}, {}), "bigram-nn": ({}, {"steps": 5}),
        "mlp": ({"n_embd": 4, "n_hidden": 8, "block_size": 3}, {"steps": 5}),
        "wavenet": ({"n_embd": 4, "n_hidden": 8, "block_size": 4}, {"steps": 5}),
        "rnn": ({"n_embd": 4, "n_hidden": 6}, {"steps": 5}), "gru": ({"n_embd": 4, "n_hidden": 6}, {"steps": 5}),
        "transformer": ({"n_embd": 8, "n_head": 2, "n_layer": 1}, {"steps": 5})}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """{model: (checkpoint path, the dev loss the run reported)} for every model and a mixture of two."""
    root = tmp_path_factory.mktemp("trained")
    data = root / "names.txt"
    data.write_text("\n".join(REPO_NAMES.read_text(encoding="utf-8").splitlines()[::50]) + "\n", encoding="utf-8")
    found = {}
    for model, (model_options, train_options) in TINY.items():
        result = api.train(model, data=data, out=root / "out", model_options=model_options,
                           train_options=train_options, progress=False, n_threads=1)
        found[model] = (result.path, result.dev_loss)
    ok("mix", found["ngram"][0], found["gru"][0], "--out", root / "mixed")
    found["mixture"] = (root / "mixed" / f"mixture{checkpoint.SUFFIX}", None)
    return found


# ------------------------------------------------------------------------ built without initialising

@pytest.mark.parametrize("model", [*TINY, "mixture"])
def test_loading_gives_back_the_saved_weights_bit_for_bit_and_the_recorded_loss(trained, model):
    path, dev_loss = trained[model]
    loaded = api.load(path, n_threads=1)
    stored = safetensors.torch.load_file(path)
    weights = loaded.model.state_dict()
    assert weights.keys() == {name.removeprefix("state_dict.") for name in stored if name.startswith("state_dict.")}
    for name, t in weights.items():
        saved = stored[f"state_dict.{name}"]
        assert t.dtype == saved.dtype and torch.equal(t, saved), name
    assert not any(t.is_meta for t in [*loaded.model.parameters(), *loaded.model.buffers()])
    loss = loaded.evaluate("dev")["loss"]
    if dev_loss is not None:
        assert loss == dev_loss
    if not loaded.model.counts and model != "mixture":
        assert loss == loaded.ckpt["best_dev_loss"]


@pytest.mark.parametrize("model", ["mlp", "wavenet", "gru", "transformer", "mixture"])
def test_loading_draws_no_random_numbers(trained, model):
    """The weights come from the file: none are drawn, so torch's generator is left as it was."""
    torch.manual_seed(7)
    before = torch.get_rng_state()
    api.load(trained[model][0], n_threads=1)
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.slow
def test_loading_imports_no_compiler(trained):
    """torch's normal_ on the meta device imports torch._dynamo (about a second per command): building a
    model to load draws no initial weights, on any device."""
    paths = [str(trained[m][0]) for m in [*TINY, "mixture"]]
    script = ("import sys; from makemore import api\n"
              "for path in sys.argv[1:]: api.load(path)\n"
              "print('torch._dynamo' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", script, *paths], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"


# ------------------------------------------------------------------------------------------- the header

def test_a_header_longer_than_the_limit_is_refused_unparsed(tmp_path):
    path = tmp_path / f"long-header{checkpoint.SUFFIX}"
    path.write_bytes((checks.MAX_HEADER_BYTES + 8).to_bytes(8, "little") + b"{" * 64)
    refused(path, "header", f"{checks.MAX_HEADER_BYTES:,}")


def test_more_tensors_than_the_limit_are_refused_before_safetensors_parses_them(trained, tmp_path):
    header, data = unpack(trained["bigram"][0].read_bytes())
    for i in range(checks.MAX_TENSORS + 1):
        header[f"t{i}"] = {"dtype": "U8", "shape": [0], "data_offsets": [len(data), len(data)]}
    path = tmp_path / f"many-tensors{checkpoint.SUFFIX}"
    path.write_bytes(pack(header, data))
    refused(path, "tensors", f"{checks.MAX_TENSORS:,}")


def test_braces_and_quotes_inside_strings_are_not_counted_as_tensors(trained, tmp_path):
    """The tensors are counted by the JSON objects outside strings: a document full of braces and escaped
    quotes, well beyond the limit's number, still loads."""
    header, data = unpack(trained["mlp"][0].read_bytes())
    doc = document(header)
    doc["metrics"][0]['"{\\' * (checks.MAX_TENSORS + 10)] = 1.0
    path = tmp_path / f"braces{checkpoint.SUFFIX}"
    path.write_bytes(seal(header, data, doc))
    assert not isinstance(attempt(path), str)


# ---------------------------------------------------------------------------- sizes, items and memory

def test_items_larger_than_any_data_file_are_refused_unread(trained, tmp_path):
    """A sparse file: the items' bytes are never read."""
    header, data = unpack(trained["bigram"][0].read_bytes())
    meta = header.pop("__metadata__")
    body, moved = b"", {}
    for name, entry in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        if name != "items":
            begin, end = entry["data_offsets"]
            moved[name] = dict(entry, data_offsets=[len(body), len(body) + end - begin])
            body += data[begin:end]
    n = MAX_DATA_BYTES + 1
    moved["items"] = {"dtype": "U8", "shape": [n], "data_offsets": [len(body), len(body) + n]}
    raw = pack({"__metadata__": meta, **moved}, body)
    path = tmp_path / f"sparse-items{checkpoint.SUFFIX}"
    with open(path, "wb") as f:
        f.write(raw)
        f.truncate(len(raw) + n)
    refused(path, "training items", f"{MAX_DATA_BYTES:,}")


def test_an_item_longer_than_the_data_limit_is_refused(trained, tmp_path):
    header, data = unpack(trained["mlp"][0].read_bytes())
    tensors = safetensors.torch.load(trained["mlp"][0].read_bytes())
    items = bytes(tensors["items"].tolist()).decode().split("\n")
    items[3] = "a" * (MAX_ITEM_CHARS + 1)
    tensors["items"] = torch.tensor(list("\n".join(items).encode()), dtype=torch.uint8)
    new_header, new_data = unpack(safetensors.torch.save(tensors, metadata=header["__metadata__"]))
    path = tmp_path / f"long-item{checkpoint.SUFFIX}"
    path.write_bytes(seal(new_header, new_data))
    refused(path, "item 4", f"{MAX_ITEM_CHARS + 1:,} characters")


@settings(max_examples=80, deadline=None, derandomize=True)
@given(st.lists(st.text(st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)), max_size=1010)
                | st.builds(lambda c, n: c * n, st.sampled_from("aé中😀"), st.integers(990, 1010)), min_size=1))
def test_the_first_item_too_long_is_found_in_characters_not_bytes(lines):
    found = first_too_long("\n".join(lines))
    first = next(((i + 1, len(line)) for i, line in enumerate(lines) if len(line) > MAX_ITEM_CHARS), None)
    assert found == first


def test_a_file_that_would_not_fit_in_memory_is_refused_before_it_is_mapped(trained, tmp_path, monkeypatch):
    path = trained["mlp"][0]
    monkeypatch.setattr("makemore.memory.available", lambda device: 1 << 16)
    refused(path, "memory", "available")
    result = invoke("eval", "--checkpoint", path)
    assert result.exit_code == 1 and result.output.strip().count("\n") == 0 and "memory" in result.output


ADDRESS_SPACE_SCRIPT = r"""
import resource, sys
from makemore import api
from makemore.errors import CheckpointError
with open("/proc/self/status") as f:
    used = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (used + (1 << 30), resource.RLIM_INFINITY))
try:
    api.load(sys.argv[1])
except CheckpointError as e:
    print(e)
"""


@pytest.mark.slow
def test_under_an_address_space_limit_a_huge_sparse_checkpoint_is_refused_in_one_line(trained, tmp_path):
    """2 GB of tensors (sparse on disk) under 1 GB of address space left: a one-line refusal, never torch's
    "unable to mmap" traceback."""
    header, data = unpack(trained["bigram"][0].read_bytes())
    n = 2 << 30
    header["huge"] = {"dtype": "U8", "shape": [n], "data_offsets": [len(data), len(data) + n]}
    raw = pack(header, data)
    path = tmp_path / f"huge{checkpoint.SUFFIX}"
    with open(path, "wb") as f:
        f.write(raw)
        f.truncate(len(raw) + n)
    result = subprocess.run([sys.executable, "-c", ADDRESS_SPACE_SCRIPT, str(path)], capture_output=True, text=True,
                            timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(f"{path}: ") and result.stdout.count("\n") == 1, result.stdout


@pytest.mark.slow
def test_loading_a_wide_transformer_reads_one_position_to_check_it_predicts_numbers(trained, tmp_path):
    """A valid transformer of 256 heads over 1,024 positions (a 1 GB attention bias for a whole row) loads
    with 1 GB of address space left: the check that it predicts numbers reads the window's last position."""
    ckpt = checkpoint.load(trained["transformer"][0])
    cls = get_model_class("transformer")
    config = cls.config_from(dict(ckpt["config"], block_size=1024, n_head=256, n_embd=256, n_layer=1))
    wide = cls(config, len(ckpt["vocab"]))
    path = tmp_path / f"wide{checkpoint.SUFFIX}"
    checkpoint.save(dict(ckpt, config=dataclasses.asdict(config), state_dict=wide.state_dict(), resume=None), path)
    result = subprocess.run([sys.executable, "-c", ADDRESS_SPACE_SCRIPT, str(path)], capture_output=True, text=True,
                            timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"))
    assert result.returncode == 0 and result.stdout == "", (result.stdout + result.stderr)[-2000:]


# ----------------------------------------------------------------------------------------- mixtures

def _nested(leaf: dict, width: int, levels: int) -> dict:
    config = {"components": [leaf] * width, "weights": [1 / width] * width}
    for _ in range(levels):
        config = {"components": [{"model": "mixture", "config": config}] * width, "weights": [1 / width] * width}
    return config


def test_a_mixture_of_too_many_models_is_refused_from_its_config_alone(trained, tmp_path):
    """16^4 = 65,536 bigrams, four levels deep, in a 6 MB file: refused by counting, nothing built (every
    component used to be built on the meta device: 262,144 of them took minutes)."""
    header, data = unpack(trained["mixture"][0].read_bytes())
    doc = document(header)
    bigram = document(unpack(trained["bigram"][0].read_bytes())[0])
    doc["config"] = _nested({"model": "bigram", "config": bigram["config"]}, 16, 3)
    path = tmp_path / f"many-models{checkpoint.SUFFIX}"
    path.write_bytes(seal(header, data, doc))
    assert path.stat().st_size < checks.MAX_HEADER_BYTES
    refused(path, f"at most {MAX_MODELS} trained models")


def _chain(width: int, depth: int, leaves_beside: int) -> list:
    """width bigrams in a mixture nested depth times, each level with leaves_beside more bigrams."""
    shape = [None] * width
    for _ in range(depth):
        shape = [shape] + [None] * leaves_beside
    return shape


# a mixture's shape: a leaf (None) is a bigram, a list a mixture of its elements; random trees, and chains
# around the limits of depth, width and number
SHAPES = (st.builds(_chain, st.sampled_from([1, 3, MAX_MODELS - 2, MAX_MODELS, MAX_MODELS + 1, MAX_COMPONENTS + 1]),
                    st.sampled_from(range(MAX_DEPTH + 2)), st.integers(0, 3))
          | st.recursive(st.none(), lambda inner: st.lists(inner, min_size=1, max_size=MAX_COMPONENTS + 2),
                         max_leaves=MAX_MODELS + 8).filter(lambda shape: isinstance(shape, list)))


def _measure(shape, depth: int = 0) -> tuple[int, int, int]:
    """(leaves, deepest nesting of a mixture, widest mixture) of a shape."""
    if shape is None:
        return 1, 0, 0
    parts = [_measure(part, depth + 1) for part in shape]
    return (sum(p[0] for p in parts), max([depth] + [p[1] for p in parts]), max([len(shape)] + [p[2] for p in parts]))


def _config_and_state(shape, leaf_config: dict, leaf_state: dict, prefix: str = "") -> tuple[dict, dict]:
    components, state = [], {}
    for i, part in enumerate(shape):
        if part is None:
            components.append({"model": "bigram", "config": leaf_config})
            state.update({f"{prefix}components.{i}.{name}": t.clone() for name, t in leaf_state.items()})
        else:
            config, inner = _config_and_state(part, leaf_config, leaf_state, f"{prefix}components.{i}.")
            components.append({"model": "mixture", "config": config})
            state.update(inner)
    return {"components": components, "weights": [1 / len(shape)] * len(shape), "kind": "linear"}, state


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.filter_too_much])
@given(shape=SHAPES)
@pytest.mark.slow
def test_crafted_mixture_nestings_load_whole_or_are_refused_in_one_line(trained, tmp_path, shape):
    """Mixtures of bigrams nested in any shape, their tensors all there: within the limits the model loads
    with every bigram and predicts distributions; beyond them, a one-line refusal that names the limit."""
    leaves, depth, widest = _measure(shape)
    bigram = checkpoint.load(trained["bigram"][0])
    config, state = _config_and_state(shape, bigram["config"], bigram["state_dict"])
    ckpt = checkpoint.build(model="mixture", config=config, vocab=bigram["vocab"], train={}, split=bigram["split"],
                            data=bigram["data"], items=bigram["items"], state_dict=state, step=0,
                            best_dev_loss=float("nan"), metrics=[],
                            mix=dict(components=[], component_dev_losses=[], dev_loss=float("nan"),
                                     em_iterations=0))
    path = tmp_path / f"nested{checkpoint.SUFFIX}"
    checkpoint.save(ckpt, path)  # written whatever it holds: load is what refuses
    result = attempt(path)
    if depth < MAX_DEPTH and leaves <= MAX_MODELS and widest <= MAX_COMPONENTS:
        event("loaded")
        assert not isinstance(result, str), result
        assert sum(type(m).__name__ == "Bigram" for m in result.model.modules()) == leaves
        probs = result.model(torch.zeros(3, result.block_size, dtype=torch.long)).exp().sum(-1)
        assert torch.allclose(probs, torch.ones(3, dtype=probs.dtype))
    else:
        event("refused")
        assert isinstance(result, str)
        assert any(words in result for words in ("nest at most", "trained models", "components")), result
