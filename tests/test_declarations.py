"""The manifest of declarations (makemore/declarations.json): up to date, used only while it matches its
sources, and enough for `makemore train --help` and the usage errors to start without importing torch."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from makemore import api, declarations, models
from makemore.errors import DataError, OptionError
from makemore.models import MODELS

ROOT = Path(__file__).resolve().parents[1]


def test_the_shipped_manifest_is_up_to_date():
    assert declarations.MANIFEST.read_text(encoding="utf-8") == declarations.manifest_text(), (
        f"makemore/declarations.json is out of date (a model or its registry changed): run {declarations.REGENERATE}")
    assert declarations.read_manifest() == declarations.from_classes()


# (arguments, exit code, what the output says)
WITHOUT_TORCH = [
    (["train", "--help"], 0, "--block-size INT "),
    (["lr-find", "--help"], 0, "--weight-decay FLOAT"),
    (["train", "--bogus"], 2, "No such option '--bogus'"),
    (["train", "--steps", "abc"], 2, "Invalid value for '--steps': 'abc' is not int"),
    (["train", "--optimizer", "bogus"], 2, "'bogus' is not one of 'sgd', 'adamw'"),
    (["train", "--model", "bigram-nn", "--block-size", "3"], 2,
     "--block-size: 3 is too large; it must be at most 1 (--model bigram-nn)"),
    (["train", "--model", "bigram", "--n-hidden", "5"], 2, "--n-hidden does not apply to --model bigram; it is an "
                                                           "option of mlp"),
    (["train", "--model", "ngram", "--steps", "5"], 2, "--steps does not apply to --model ngram: it is counted"),
    (["train", "--model", "ngram", "--smoothing", "-1"], 2, "'-1' must be a finite number >= 0 (add-k), or kn"),
    (["train", "--lr", "0"], 2, "--lr: 0.0 is too small; it must be above 0"),
    (["lr-find", "--model", "bigram"], 2, "--model bigram is counted in one pass, it has no learning rate"),
    (["lr-find", "--min-lr", "1", "--max-lr", "0.5"], 2, "--min-lr (1) must be below --max-lr (0.5)"),
    (["lr-find", "--model", "mlp", "--n-hidden", "0"], 2, "--n-hidden: 0 is too small; it must be at least 1"),
    (["train", "--model", "wavenet", "--block-size", "6"], 2, "--block-size: 6 is not one of 2, 4, 8"),
    (["train", "--model", "transformer", "--n-head", "3"], 2, "--n-embd 64 is not a multiple of --n-head 3"),
    (["train", "--device", "meta"], 2, "unknown device 'meta'; use auto, cpu, cuda, cuda:N or mps"),
    (["sample", "--device", "cuda:x"], 2, "unknown device 'cuda:x'"),
]

RUNNER = """
import json, sys
from click.testing import CliRunner
from makemore.cli import cli
results = []
for args in json.loads(sys.argv[1]):
    result = CliRunner().invoke(cli, args, prog_name="makemore")
    results.append([result.exit_code, result.output, "torch" in sys.modules])
print(json.dumps(results))
"""


def test_help_and_usage_errors_start_without_torch(tmp_path):
    done = subprocess.run([sys.executable, "-c", RUNNER, json.dumps([args for args, _, _ in WITHOUT_TORCH])],
                          capture_output=True, text=True, cwd=tmp_path, check=True,
                          env=dict(os.environ, MAKEMORE_DEBUG="", PYTHONPATH=str(ROOT)))
    for (args, code, said), (exit_code, output, torch) in zip(WITHOUT_TORCH, json.loads(done.stdout)):
        assert exit_code == code and said in output, (args, output)
        assert not torch, (f"makemore {' '.join(args)} imported torch; is makemore/declarations.json up to date? "
                           f"({declarations.REGENERATE})")


def _values(spec):
    """Values to try on an option: its edges and beyond, its choices, and some that no option takes."""
    found = [None, "bogus", True, 0.5, "kn", "0.5,1,1.5", (0.5, 1.0, 1.5)] + list(spec.choices)
    for edge in (spec.low, spec.high):
        if edge is not None:
            found += [edge - 1, edge, edge + 1]
    return found


def _refusal(check, *args):
    try:
        check(*args)
    except OptionError as e:
        return str(e)
    return None


def _api_check(model, model_options, train_options):
    api.model_config(model, model_options)
    api.train_config(model, train_options)


def test_the_checks_before_torch_refuse_what_the_api_refuses_with_its_messages():
    declared = declarations.from_json(json.loads(declarations.manifest_text()))  # the manifest's
    names = {n: spec for d in declared.models.values() for n, (spec, _) in d.options.items()}
    differ, refused = [], 0
    for model in MODELS:
        cases = [({name: v}, {}) for name, spec in names.items() for v in _values(spec)]
        cases += [({}, {name: v}) for name, (spec, _) in declared.train.items() for v in _values(spec)]
        cases += [({"block_size": 10**6}, {"lr": 0.0}), ({"block_size": 2}, {"steps": -1})]
        for model_options, train_options in cases:
            ours = _refusal(declared.check, model, model_options, train_options)
            theirs = _refusal(_api_check, model, model_options, train_options)
            refused += theirs is not None
            if ours != theirs:
                differ.append((model, model_options, train_options, ours, theirs))
    assert not differ
    assert refused > 100


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("min_lr,max_lr", [(1e-3, 1.0), (1.0, 0.5), (0.5, 0.5)])
def test_the_sweeps_checks_before_torch_are_the_apis(model, min_lr, max_lr):
    declared = declarations.from_json(json.loads(declarations.manifest_text()))
    ours = _refusal(declared.check_sweep, model, min_lr, max_lr)
    try:
        theirs = _refusal(api.lr_find, model, "no-such-file.txt", None, None, min_lr, max_lr, 20, (0.8, 0.1, 0.1),
                          42, "cpu")
    except DataError:  # past its checks of the model and the rates, at the data
        theirs = None
    assert ours == theirs


def test_a_registry_changed_at_run_time_reads_the_classes(monkeypatch):
    monkeypatch.setitem(models.MODELS, "toy", "tests.toy_model")
    assert declarations.read_manifest() is None
    assert "sharpness" in declarations.load().models["toy"].options


def test_a_manifest_whose_model_changed_is_not_used(tmp_path, monkeypatch):
    source = (ROOT / "tests" / "toy_model.py").read_text(encoding="utf-8").replace('"toy"', '"toy-copy"')
    (tmp_path / "toy_copy.py").write_text(source, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(models.MODELS, "toy-copy", "toy_copy")
    manifest = tmp_path / "declarations.json"
    manifest.write_text(declarations.manifest_text(), encoding="utf-8")
    assert declarations.read_manifest(manifest) == declarations.from_classes()
    (tmp_path / "toy_copy.py").write_text(source + "# an edit\n", encoding="utf-8")
    assert declarations.read_manifest(manifest) is None


def _option(data, model="ngram", name="smoothing"):
    return data["models"][model]["options"][name]["option"]


BROKEN = {
    "help not text": lambda d: _option(d).update(help=3),
    "an unknown kind": lambda d: _option(d).update(kind="complex"),
    "a parse function's module is gone": lambda d: _option(d).update(parse="makemore.nowhere:parse_smoothing"),
    "a parse function is gone": lambda d: _option(d).update(parse="makemore.models.smoothing:nothing"),
    "a parse reference is not module:function": lambda d: _option(d).update(parse=".smoothing"),
    "a default JSON object": lambda d: d["models"]["mlp"]["options"]["n_hidden"].update(default={"a": 1}),
    "a bound as text": lambda d: _option(d, "mlp", "n_hidden").update(low="1"),
    "nested choices": lambda d: _option(d, "mlp", "init").update(choices=[["scaled"]]),
    "an option field more": lambda d: _option(d).update(extra=1),
    "an option field less": lambda d: _option(d).pop("note"),
    "no training settings": lambda d: d.pop("train"),
    "a size rule of no setting": lambda d: d["models"]["mlp"].update(size_rules=["nonexistent"]),
    "a train default of no setting": lambda d: d["models"]["mlp"]["train_defaults"].update(bogus=1),
    "counts not a boolean": lambda d: d["models"]["ngram"].update(counts="yes"),
    "another format": lambda d: d.update(format=2),
    "another fingerprint": lambda d: d.update(fingerprint="0" * 64),
    "a source missing": lambda d: d["sources"].remove("makemore.train"),
    "a source that is not there": lambda d: d["sources"].append("makemore.nowhere"),
    "the models in another order": lambda d: d.update(models=dict(reversed(d["models"].items()))),
    "a model missing": lambda d: d["models"].pop("mlp"),
}


@pytest.mark.parametrize("broken", sorted(BROKEN))
def test_a_malformed_manifest_is_not_used(tmp_path, broken):
    data = json.loads(declarations.manifest_text())
    manifest = tmp_path / "declarations.json"
    manifest.write_text(json.dumps(data), encoding="utf-8")
    assert declarations.read_manifest(manifest) == declarations.from_classes()
    BROKEN[broken](data)
    manifest.write_text(json.dumps(data), encoding="utf-8")
    assert declarations.read_manifest(manifest) is None


@pytest.mark.parametrize("text", [b"", b"{", b"[]", b"\xff\xfe", b"[" * 100_000, b'{"models": 1}'])
def test_a_manifest_that_is_not_one_is_not_used(tmp_path, text):
    manifest = tmp_path / "declarations.json"
    manifest.write_bytes(text)
    assert declarations.read_manifest(manifest) is None
    assert declarations.read_manifest(tmp_path / "missing.json") is None
