"""Options are declared once, in the configs: the CLI's flags, their help and every check come from there."""
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from makemore import checkpoint, models, options
from makemore.cli import declared_flags
from makemore.errors import OptionError
from makemore.models import MODEL_NAMES, get_model_class
from makemore.train import TrainConfig


@pytest.fixture
def toy(monkeypatch):
    """The toy model registered with the one line a new model adds to the registry."""
    monkeypatch.setitem(models.MODELS, "toy", "tests.toy_model")
    yield "toy"


def test_a_new_model_is_one_file_and_one_line(toy, run, small_names):
    help_text = " ".join(run("train", "--help").output.split())
    assert "--sharpness FLOAT A factor on the logits. [default: 1.5]" in help_text
    assert "toy" in help_text  # its name in --model's choices and in the defaults of the shared flags
    out = run("train", "--model", "toy", "--data", small_names, "--sharpness", 2, "--block-size", 3, "-q").output
    assert "saved" in out
    info = json.loads(run("inspect", "--json").output)
    assert info["model"] == "toy" and info["config"] == dict(block_size=3, sharpness=2.0)
    bad = run("train", "--model", "toy", "--data", small_names, "--sharpness", 0, ok=False)
    assert bad.exit_code == 2 and "--sharpness: 0.0 is too small; it must be above 0" in bad.output


def test_an_option_of_another_model_names_the_models_that_take_it(run, small_names):
    result = run("train", "--model", "bigram", "--data", small_names, "--n-hidden", 10, ok=False)
    assert result.exit_code == 2
    assert "--n-hidden does not apply to --model bigram; it is an option of mlp" in result.output


def _declared_everywhere():
    names = {}
    for model in MODEL_NAMES:
        for name, (spec, default) in options.declared(get_model_class(model).Config).items():
            names.setdefault(name, spec)
    return names


@pytest.mark.parametrize("model", MODEL_NAMES)
@pytest.mark.parametrize("name", sorted(_declared_everywhere()))
def test_every_model_option_on_every_model(run, small_names, model, name):
    """Each option on each model: refused as a usage error by a model that does not take it, beyond its
    range or when it is not a value of its kind; its default always trains."""
    cls = get_model_class(model)
    takes = options.declared(cls.Config)
    fast = [] if cls.counts else ["--steps", 2]
    base = ["train", "--model", model, "--data", small_names, "-q", *fast]
    if name not in takes:
        spec = _declared_everywhere()[name]
        value = [options.flag(name)]
        if spec.kind is not bool:
            value.append(spec.choices[0] if spec.choices else 1)
        result = run(*base, *value, ok=False)
        assert result.exit_code == 2 and "does not apply to --model" in result.output
        return
    spec, default = takes[name]
    if spec.kind is bool:
        run(*base, options.flag(name) if default else "--no-" + name.replace("_", "-"))
        return
    if default is not None:
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        run(*base, options.flag(name), shown)
    if spec.high is not None:
        too_big = run(*base, options.flag(name), int(spec.high) + 1, ok=False)
        assert too_big.exit_code == 2 and "too large" in too_big.output
    if spec.low is not None:
        too_small = run(*base, options.flag(name), spec.low - 1, ok=False)
        assert too_small.exit_code == 2 and "too small" in too_small.output
    # every option, whether or not it has a default or a range, refuses what is not one of its values
    nonsense = run(*base, options.flag(name), "nonsense", ok=False)
    assert nonsense.exit_code == 2 and options.flag(name) in nonsense.output


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=8)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(model=st.sampled_from(MODEL_NAMES + ("mixture",)), name=st.sampled_from(
    sorted(_declared_everywhere()) + ["components", "weights", "bogus"]), value=JSON)
def test_a_config_from_any_json_is_built_or_refused_with_an_option_error(model, name, value):
    cls = get_model_class(model)
    values = {} if model == "mixture" else {name: value}
    if model == "mixture":
        values = dict(components=value, weights=[1.0]) if name == "components" else dict(components=[], weights=value)
    try:
        config = cls.config_from(values)
    except OptionError as e:
        assert "\n" not in str(e)
        return
    cls.check_config(config, 27)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(name=st.sampled_from(sorted(options.declared(TrainConfig))), value=JSON)
def test_training_settings_from_any_json_are_checked(name, value):
    try:
        config = options.make(TrainConfig, {name: value}, what="training")
    except OptionError as e:
        assert "\n" not in str(e)
        return
    spec = options.declared(TrainConfig)[name][0]
    got = getattr(config, name)
    assert type(got) is spec.kind
    if spec.low is not None:
        assert got >= spec.low
    if spec.high is not None:
        assert got <= spec.high


def test_declared_flags_show_each_models_default():
    found = {name: defaults for name, _, defaults in declared_flags(("lr", "steps"))}
    assert found["block_size"] == {m: get_model_class(m).Config().block_size for m in MODEL_NAMES}
    assert found["block_size"]["mlp"] == 6 and found["block_size"]["ngram"] == 5
    assert found["lr"]["bigram-nn"] == 0.3 and found["lr"]["mlp"] == 0.003 and "ngram" not in found["lr"]
    assert found["steps"]["mlp"] == "by data size"


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_expected_tensors_are_what_the_model_builds(model):
    """A model that writes its shapes out (to load without the meta device's imports) agrees with __init__."""
    cls = get_model_class(model)
    # a default that depends on the data (a sequence model's block_size) is set as a run sets it
    configs = [cls.config_for_data(cls.Config(), {}, ["an item", "another"], 11)]
    configs += [cls.Config(block_size=3, n_embd=4, n_hidden=7, direct=False)] if model == "mlp" else []
    for config in configs:
        built = {name: (t.dtype, tuple(t.shape)) for name, t in cls(config, 11).state_dict().items()}
        expected = cls.expected_tensors(config, 11)
        assert set(built) == set(expected)
        for name, (dtype, shape) in expected.items():
            dtypes = dtype if isinstance(dtype, tuple) else (dtype,)
            assert built[name][0] in dtypes
            assert len(shape) == len(built[name][1])
            assert all(size is None or size == got for size, got in zip(shape, built[name][1]))
        if not cls.counts:
            model = cls(config, 11)
            assert cls.expected_parameters(config, 11) == [(q.dtype, tuple(q.shape)) for q in model.parameters()]


def test_a_config_refused_for_its_data_leaves_no_output_folder(run, small_names, tmp_path):
    """A value this data cannot take (a block size whose keys overflow 64 bits with its vocabulary) is
    refused with exit 1, what the data cannot do, before the output folder is made; the default block size
    adapts to such a vocabulary instead of being reported as if the user had typed it."""
    result = run("train", "--model", "ngram", "--data", small_names, "--block-size", 15, "--out", "new", ok=False)
    assert result.exit_code == 1 and "64-bit keys" in result.output and "this data's vocabulary" in result.output
    assert not (tmp_path / "new").exists()
    wide = tmp_path / "wide.txt"  # 2,999 distinct characters: 3000^6 is beyond 64 bits, 3000^5 is not
    wide.write_text("\n".join(chr(0x4E00 + i) + chr(0x4E00 + (7 * i) % 2999) for i in range(2999)) + "\n",
                    encoding="utf-8")
    run("train", "--model", "ngram", "--data", wide, "--out", "wide")
    assert checkpoint.load(tmp_path / "wide" / "ngram.safetensors")["config"]["block_size"] == 4


@pytest.mark.parametrize("flags, message", [
    (["--model", "wavenet", "--block-size", 6], "--block-size: 6 is not one of 2, 4, 8"),
    (["--model", "transformer", "--n-embd", 10, "--n-head", 4], "--n-embd 10 is not a multiple of --n-head 4"),
    (["--model", "transformer", "--n-embd", 30], "--n-embd 30 is not a multiple of --n-head 4"),
])
def test_declared_constraints_between_options_are_usage_errors(run, small_names, flags, message):
    result = run("train", "--data", small_names, *flags, ok=False)
    assert result.exit_code == 2 and message in result.output


# (arguments, exit code, what the output says): help and usage errors, answered before any data is read
USAGE = [
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
    (["train", "--model", "transformer", "--n-head", "5"], 2, "--n-embd 96 is not a multiple of --n-head 5"),
    (["train", "--device", "meta"], 2, "unknown device 'meta'; use auto, cpu, cuda, cuda:N or mps"),
    (["sample", "--device", "cuda:x"], 2, "unknown device 'cuda:x'"),
]


@pytest.mark.parametrize("args, code, said", USAGE)
def test_help_and_usage_errors(run, args, code, said):
    result = run(*args, ok=False)
    assert result.exit_code == code and said in result.output, result.output
    assert not (Path.cwd() / "out").exists()  # refused before any output folder is made


def test_a_flag_of_several_models_says_what_it_means_for_each(run):
    help_text = " ".join(run("train", "--help").output.split())
    for model, meaning in (("mlp", "tanh hidden units."), ("wavenet", "Units of each level."),
                           ("rnn, gru", "Size of the hidden state of each layer.")):
        assert f"{model}: {meaning}" in help_text
    assert "--steps INT Optimizer steps" in help_text  # said once where every model says the same


def test_help_and_version_start_without_torch(tmp_path):
    """`makemore --help` and `--version` answer at once: they import neither torch nor the models."""
    import os
    import subprocess
    import sys

    runner = ("import json, sys\nfrom click.testing import CliRunner\nfrom makemore.cli import cli\n"
              "out = [CliRunner().invoke(cli, [a]).output for a in ('--help', '--version')]\n"
              "print(json.dumps([out, 'torch' in sys.modules]))")
    done = subprocess.run([sys.executable, "-c", runner], capture_output=True, text=True, cwd=tmp_path, check=True,
                          env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1])))
    (help_text, version), torch_imported = json.loads(done.stdout)
    assert "train" in help_text and "makemore, version" in version and not torch_imported
