"""Bad input through the real CLI: every case is one line on stderr and exit 1, or a usage error (exit 2)
naming the option; never a traceback (the runner re-raises any exception the CLI lets through)."""
import io
import random
import unicodedata
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from makemore import api, checkpoint, data
from makemore.cli import cli
from makemore.data import fingerprint
from test_checkpoint import document, seal, unpack

LOWER = "abcdefghijklmnopqrstuvwxyz"
TINY_MLP = ["--model", "mlp", "--steps", "20", "--n-hidden", "16", "--batch-size", "16", "-q"]


def invoke(*args):
    runner = CliRunner(env={"MAKEMORE_DEBUG": ""})
    return runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)


def ok(*args):
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return result


def error(result, *words) -> str:
    """The one-line message of an exit-1 failure; it must contain every word."""
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert result.stdout == ""
    for word in words:
        assert str(word) in lines[0], (word, lines[0])
    return lines[0]


def usage_error(result, option: str) -> str:
    assert result.exit_code == 2, result.output
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("Error: ") and option in message, result.stderr
    return message


def no_temporaries(root: Path) -> None:
    left = [p for p in root.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".write-test")]
    assert not left, left


@pytest.fixture(autouse=True)
def _no_temporaries_left(tmp_path):
    yield
    no_temporaries(tmp_path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, request):
    """A bigram and a tiny mlp trained once on a few hundred real names; {name: checkpoint path}."""
    root = tmp_path_factory.mktemp("trained")
    names = Path(__file__).resolve().parent.parent / "names.txt"
    data = root / "names.txt"
    data.write_text("\n".join(names.read_text(encoding="utf-8").splitlines()[::50]) + "\n", encoding="utf-8")
    ok("train", "--model", "bigram", "--data", data, "--out", root / "out", "-q")
    ok("train", *TINY_MLP, "--data", data, "--out", root / "out")
    return {"bigram": root / "out" / "bigram.safetensors", "mlp": root / "out" / "mlp.safetensors", "data": data}


# ---------------------------------------------------------------------------------------------- data files

BAD_FILES = {
    "empty": (b"", ["is empty"]),
    "blank": (b"\n   \n\t\n\r\n\n", ["only blank lines"]),
    "latin1": ("anna\nJosé\n".encode("latin-1"), ["not valid UTF-8", "offset 8", "iconv"]),
    "nul": (b"anna\nbo\x00b\n", ["binary", "NUL"]),
    "utf16": ("anna\nbob\n".encode("utf-16"), ["UTF-16", "iconv"]),
    "three": (b"anna\nbob\ncarl\n", ["dev split would be empty", "3 items", "at least 6 items"]),
}


@pytest.mark.parametrize("case", BAD_FILES)
@pytest.mark.parametrize("command", ["train", "eval"])
def test_bad_data_file(tmp_path, trained, case, command):
    content, words = BAD_FILES[case]
    path = tmp_path / f"{case}.txt"
    path.write_bytes(content)
    if command == "train":
        result = invoke("train", "--model", "bigram", "--data", path, "--out", tmp_path / "out")
        assert not (tmp_path / "out" / "bigram.safetensors").exists()
    else:
        result = invoke("eval", "--checkpoint", trained["bigram"], "--data", path)
    error(result, path, *words)


@pytest.mark.parametrize("what", ["missing", "directory"])
def test_data_path_that_is_no_file(tmp_path, what):
    path = tmp_path / "nope.txt"
    if what == "directory":
        path.mkdir()
    result = invoke("train", "--model", "bigram", "--data", path, "--out", tmp_path / "out")
    error(result, path, "no such file" if what == "missing" else "is a directory")


def test_split_that_would_be_empty_says_which_and_how_many(tmp_path):
    path = tmp_path / "one.txt"
    path.write_text("anna\n", encoding="utf-8")
    result = invoke("train", "--model", "bigram", "--data", path, "--splits", "0.5,0.5,0", "--out", tmp_path)
    error(result, path, "the train split would be empty", "at least 2 items")
    path.write_text("anna\nbob\n", encoding="utf-8")
    ok("train", "--model", "bigram", "--data", path, "--splits", "0.5,0.5,0", "--out", tmp_path, "-q")


def test_messy_but_valid_file_reads_like_the_clean_one(tmp_path):
    """CRLF, a byte-order mark, spaces around items, NFD accents: the same items as the clean file."""
    clean = ["anna", "bob", "josé", "zoë", "anna", "chloé", "emma", "liam"] * 3
    messy = "\ufeff" + "\r\n".join(f"  {unicodedata.normalize('NFD', item)}\t " for item in clean) + "\r\n"
    (tmp_path / "clean.txt").write_text("\n".join(clean) + "\n", encoding="utf-8")
    (tmp_path / "messy.txt").write_bytes(messy.encode("utf-8"))
    for name in ("clean", "messy"):
        ok("train", "--model", "bigram", "--data", tmp_path / f"{name}.txt", "--out", tmp_path, "--name", name, "-q")
    a, b = api.load(tmp_path / "clean.safetensors"), api.load(tmp_path / "messy.safetensors")
    assert b.items() == a.items() and len(b.items()) == len(clean)  # duplicates kept
    assert b.vocab.chars == a.vocab.chars == "." + "".join(sorted(set("".join(clean))))
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert b.evaluate("all")["loss"] == a.evaluate("all")["loss"]


def test_non_latin_characters_and_a_very_long_line(tmp_path):
    rng = random.Random(0)
    long_line = "".join(rng.choice(LOWER) for _ in range(data.MAX_ITEM_CHARS))
    items = ["мария", "иван", "さくら", "李娜", "anna", "bob", "ørjan", "ñandú"] * 5 + [long_line]
    path = tmp_path / "world.txt"
    path.write_text("\n".join(items) + "\n", encoding="utf-8")
    ok("train", *TINY_MLP, "--data", path, "--out", tmp_path, "--splits", "1,0,0")
    trained = api.load(tmp_path / "mlp.safetensors")
    assert set("мария李娜さくらø") <= set(trained.vocab.chars)
    assert max(map(len, trained.items())) == data.MAX_ITEM_CHARS
    assert len(ok("sample", "--checkpoint", tmp_path / "mlp.safetensors", "-n", 3, "--seed", 1,
                  "--prefix", "ма").stdout.splitlines()) == 3
    assert "all loss" in ok("eval", "--checkpoint", tmp_path / "mlp.safetensors", "--split", "all").stdout


def test_a_line_longer_than_an_item_may_be_is_refused_by_its_number(tmp_path):
    path = tmp_path / "long.txt"
    path.write_text("anna\n\nbob\n" + "x" * (data.MAX_ITEM_CHARS + 1) + "\n", encoding="utf-8")
    message = error(invoke("train", *TINY_MLP, "--data", path, "--out", tmp_path / "out"), path, "line 4",
                    f"{data.MAX_ITEM_CHARS + 1:,} characters")
    assert "xxx" not in message
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------- options

@pytest.mark.parametrize("args, option", [
    (["--block-size", "0"], "--block-size"),
    (["--n-embd", "0"], "--n-embd"),
    (["--n-hidden", "-3"], "--n-hidden"),
    (["--batch-size", "0"], "--batch-size"),
    (["--steps", "-1"], "--steps"),
    (["--lr", "0"], "--lr"),
    (["--lr", "-0.1"], "--lr"),
    (["--smoothing", "-1"], "--smoothing"),
    (["--seed", "-1"], "--seed"),
    (["--seed", str(2**64)], "--seed"),
    (["--splits", "0.8,0.2"], "--splits"),
    (["--splits", "a,b,c"], "--splits"),
    (["--splits", "0.8,0.1,0.2"], "--splits"),
    (["--splits", "1.1,-0.1,0"], "--splits"),
    (["--splits", "0.8,0.1,nan"], "--splits"),
    (["--splits", "0.8,0.1,inf"], "--splits"),
])
def test_bad_train_option(tmp_path, args, option):
    usage_error(invoke("train", "--model", "bigram", "--out", tmp_path / "out", *args), option)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["train", "sample", "eval"])
def test_unknown_model_lists_the_choices(command):
    message = usage_error(invoke(command, "--model", "gpt9"), "--model")
    assert all(name in message for name in ("bigram", "bigram-nn", "mlp"))


@pytest.mark.parametrize("args, option", [
    (["-n", "0"], "-n"),
    (["--temperature", "0"], "--temperature"),
    (["--temperature", "-1"], "--temperature"),
    (["--top-k", "0"], "--top-k"),
    (["--seed", "-5"], "--seed"),
])
def test_bad_sample_option(trained, args, option):
    usage_error(invoke("sample", "--checkpoint", trained["bigram"], *args), option)


def test_what_this_checkpoint_cannot_do_is_exit_1(trained, tmp_path):
    error(invoke("sample", "--checkpoint", trained["bigram"], "--top-k", 28), "--top-k 28", "27 tokens")
    error(invoke("sample", "--checkpoint", trained["bigram"], "--exclude", tmp_path / "none.txt"), "no such file")


def test_top_k_equal_to_the_vocabulary_is_fine(trained):
    ok("sample", "--checkpoint", trained["bigram"], "--top-k", 27, "-n", 2)


# ---------------------------------------------------------------------------------------------- vocabulary

def test_prefix_with_unseen_characters(trained):
    message = error(invoke("sample", "--checkpoint", trained["mlp"], "--prefix", "aQ€"), "--prefix", "Q€", LOWER)
    assert "'a" not in message.split("never saw")[1].split("(")[0]


def test_data_with_unseen_characters(tmp_path, trained):
    path = tmp_path / "other.txt"
    path.write_text("\n".join(["anna", "bob", "Zoë"] * 10) + "\n", encoding="utf-8")
    message = error(invoke("eval", "--checkpoint", trained["bigram"], "--data", path, "--split", "all"),
                    path, "item 3, character 1")
    assert "Z" not in message.replace(str(path), "")  # where, never which: the data's contents are not quoted


# --------------------------------------------------------------------------------------------- checkpoints

class Payload:
    """Unpickling this calls open(marker, 'w'), which creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def bad_checkpoint(kind: str, good: Path, where: Path) -> Path:
    path = where / f"{kind}{checkpoint.SUFFIX}"
    raw = good.read_bytes()
    if kind == "missing":
        return path
    if kind == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(random.Random(0).randbytes(len(raw)))
    elif kind == "text":
        path.write_bytes(b"anna\nbob\n")
    elif kind == "flipped":  # one byte inside the largest tensor changed: the checksum notices
        header, _ = unpack(raw)
        begin, end = max((e["data_offsets"] for n, e in header.items() if n != "__metadata__"), key=lambda o: o[1] - o[0])
        data = bytearray(raw)
        data[8 + int.from_bytes(raw[:8], "little") + (begin + end) // 2] ^= 0x40
        path.write_bytes(bytes(data))
    else:  # changed as someone who knows the format would: a valid file of another content
        header, body = unpack(raw)
        doc = document(header)
        if kind == "newer":
            doc["format_version"] = checkpoint.FORMAT_VERSION + 1
        elif kind == "incomplete":
            del doc["vocab"]
        elif kind == "unknown-model":
            doc["model"] = "gpt9"
        elif kind == "wrong-shape":
            doc["vocab"] = doc["vocab"][:5]
        path.write_bytes(seal(header, body, doc))
    return path


CHECKPOINTS = {
    "missing": ["no such checkpoint"],
    "truncated": ["not a readable checkpoint"],
    "empty": ["not a readable checkpoint"],
    "random": ["not a readable checkpoint"],
    "text": ["not a readable checkpoint"],
    "flipped": ["damaged", "checksum"],
    "newer": ["newer makemore", f"format {checkpoint.FORMAT_VERSION + 1}", "upgrade"],
    "incomplete": ["incomplete", "vocab"],
    "unknown-model": ["gpt9", "upgrade"],
    "wrong-shape": ["does not fit"],
}


@pytest.mark.parametrize("kind", CHECKPOINTS)
@pytest.mark.parametrize("command", ["sample", "eval", "train --resume"])
def test_bad_checkpoint(tmp_path, trained, kind, command):
    path = bad_checkpoint(kind, trained["mlp"], tmp_path)
    error(invoke(*command.split(), "--checkpoint", path), path, *CHECKPOINTS[kind])


def test_checkpoint_that_is_a_directory(tmp_path):
    usage_error(invoke("sample", "--checkpoint", tmp_path), "--checkpoint")


@pytest.mark.parametrize("command", ["sample", "eval"])
def test_checkpoint_of_another_model_than_asked(trained, command):
    error(invoke(command, "--model", "bigram", "--checkpoint", trained["mlp"]), trained["mlp"], "mlp", "bigram")
    ok(command, "--model", "mlp", "--checkpoint", trained["mlp"])


@pytest.mark.parametrize("command", ["sample", "eval", "train --resume", "inspect"])
def test_checkpoint_of_the_old_format_with_code_in_it_is_refused_unread(tmp_path, trained, command):
    """A torch.save archive (the format before safetensors) whose pickle would run code: refused as a file of
    an older makemore, without unpickling anything."""
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    torch.save(dict(model="mlp", config=Payload(marker), state_dict={"C": torch.zeros(3)}), path)
    args = command.split() + ([path] if command == "inspect" else ["--checkpoint", path])
    error(invoke(*args), path, "older makemore", "makemore train")
    assert not marker.exists()
    # the payload is real: an unsafe load does run it
    torch.load(io.BytesIO(path.read_bytes()), weights_only=False)
    assert marker.exists()


def test_changed_data_warns_with_both_fingerprints_and_strict_refuses(tmp_path, trained):
    data = tmp_path / "names.txt"
    data.write_bytes(trained["data"].read_bytes())
    ok("train", "--model", "bigram", "--data", data, "--out", tmp_path, "-q")
    before = fingerprint(data)
    kept = ok("eval", "--checkpoint", tmp_path / "bigram.safetensors").stdout
    with data.open("a", encoding="utf-8") as f:
        f.write("zelda\n")
    after = fingerprint(data)
    # without --data the items the checkpoint keeps are evaluated: the recorded file is not read
    result = ok("eval", "--checkpoint", tmp_path / "bigram.safetensors")
    assert result.stdout == kept and result.stderr == ""
    result = ok("eval", "--checkpoint", tmp_path / "bigram.safetensors", "--data", data)
    assert "changed since training" in result.stderr and before in result.stderr and after in result.stderr
    assert "dev loss" in result.stdout
    error(invoke("eval", "--checkpoint", tmp_path / "bigram.safetensors", "--data", data, "--strict"), data, before,
          after)


def test_resume_with_changed_data(tmp_path, trained):
    data = tmp_path / "names.txt"
    data.write_bytes(trained["data"].read_bytes())
    ok("train", *TINY_MLP, "--data", data, "--out", tmp_path)
    before = fingerprint(data)
    data.write_bytes(data.read_bytes() + b"zelda\n")
    stored = (tmp_path / "mlp.safetensors").read_bytes()
    resume = ["train", "--resume", "--checkpoint", tmp_path / "mlp.safetensors", "--steps", 30, "--out", tmp_path, "-q"]
    error(invoke(*resume), data, "changed", "--data")
    error(invoke(*resume, "--data", data, "--strict"), before, fingerprint(data))
    assert (tmp_path / "mlp.safetensors").read_bytes() == stored
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".safetensors") == ["mlp.safetensors"]
    result = ok(*resume, "--data", data)
    assert before in result.stderr and "(30 steps" in result.stdout and "mlp-2.safetensors" in result.stdout
    data.unlink()  # gone: the items the checkpoint keeps are what it was trained on
    assert "mlp-3.safetensors" in ok(*resume).stdout


def test_resume_without_a_checkpoint(tmp_path):
    error(invoke("train", "--resume", "--out", tmp_path / "out"), "no checkpoint in", "makemore train")
    error(invoke("train", "--resume", "--checkpoint", tmp_path / "none.safetensors"), "no such checkpoint")


def test_damaged_latest_pointer_falls_back_to_the_newest_checkpoint(tmp_path, trained):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mlp.safetensors").write_bytes(trained["mlp"].read_bytes())
    for pointer in (b"\xff\xfe\x00garbage", b"gone.safetensors\n", b"../../etc/passwd\n"):
        (out / "latest").write_bytes(pointer)
        assert "mlp from" in ok("eval", "--out", out).stdout
    (out / "mlp.safetensors").unlink()
    error(invoke("sample", "--out", out), "no checkpoint in", "makemore train")
