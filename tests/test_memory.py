"""What a command needs against what this process may allocate: the limits read (free memory, rlimits, cgroups),
the refusals in one line before anything large is allocated, and the chunks that shrink to fit instead."""
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from makemore import memory, mixing, plots, threads
from makemore.data import MAX_DATA_BYTES, Data, DataError, Vocab
from makemore.dataset import build_dataset
from makemore.errors import MakemoreError
from makemore.models import get_model_class
from makemore.train import TrainConfig, TrainStep, evaluate, make_optimizer

ROOT = Path(__file__).resolve().parent.parent
GB = 1 << 30
CPU = torch.device("cpu")


def fake_proc(tmp_path: Path, cgroup: str, vm_size_kb: int = 1000, vm_data_kb: int = 500,
              available_kb: int = 64 << 20) -> Path:
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "meminfo").write_text(f"MemTotal: {2 * available_kb} kB\nMemAvailable: {available_kb} kB\n")
    (proc / "self" / "status").write_text(f"Name:\tpython\nVmSize:\t{vm_size_kb} kB\nVmData:\t{vm_data_kb} kB\n")
    (proc / "self" / "cgroup").write_text(cgroup)
    return proc


def cgroup_files(folder: Path, **files) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, value in files.items():
        (folder / name.replace("_", ".", 1)).write_text(f"{value}\n")


def unlimited(limit):
    return resource.RLIM_INFINITY, resource.RLIM_INFINITY


def test_available_is_free_memory_without_other_limits(tmp_path):
    proc = fake_proc(tmp_path, "0::/\n", available_kb=1 << 20)
    assert memory.available(CPU, proc, tmp_path / "cgroup", unlimited) == GB


def test_available_is_the_address_space_left_under_rlimit_as(tmp_path):
    proc = fake_proc(tmp_path, "0::/\n", vm_size_kb=1 << 20)

    def limits(which):
        return (3 * GB, 3 * GB) if which == resource.RLIMIT_AS else unlimited(which)

    assert memory.available(CPU, proc, tmp_path / "cgroup", limits) == 2 * GB


def test_available_is_the_data_left_under_rlimit_data(tmp_path):
    proc = fake_proc(tmp_path, "0::/\n", vm_data_kb=1 << 19)

    def limits(which):
        return (GB, resource.RLIM_INFINITY) if which == resource.RLIMIT_DATA else unlimited(which)

    assert memory.available(CPU, proc, tmp_path / "cgroup", limits) == GB // 2


def test_available_is_the_room_left_in_a_cgroup_v1_and_its_ancestors(tmp_path):
    proc = fake_proc(tmp_path, "5:cpu:/\n4:memory:/jobs/this\n0::/\n")
    root = tmp_path / "cgroup"
    cgroup_files(root / "memory", memory_limit_in_bytes=9223372036854771712, memory_usage_in_bytes=5 * GB)
    cgroup_files(root / "memory" / "jobs", memory_limit_in_bytes=4 * GB, memory_usage_in_bytes=3 * GB)
    cgroup_files(root / "memory" / "jobs" / "this", memory_limit_in_bytes=2 * GB, memory_usage_in_bytes=GB // 2)
    # the process's own cgroup leaves 1.5 GB, its parent only 1 GB
    assert memory.available(CPU, proc, root, unlimited) == GB


def test_available_reads_cgroup_v2_and_a_namespaced_mount(tmp_path):
    proc = fake_proc(tmp_path, "0::/user.slice/job\n")
    root = tmp_path / "cgroup"
    cgroup_files(root / "user.slice" / "job", memory_max=3 * GB, memory_current=GB)
    assert memory.available(CPU, proc, root, unlimited) == 2 * GB
    # inside a container the mount shows only the process's own cgroup, at its root
    inside = tmp_path / "inside"
    cgroup_files(inside, memory_max=GB, memory_current=GB // 4)
    assert memory.available(CPU, proc, inside, unlimited) == 3 * GB // 4
    cgroup_files(inside, memory_max="max", memory_current=GB // 4)
    assert memory.available(CPU, proc, inside, unlimited) == 64 * GB


@pytest.mark.slow
def test_available_follows_a_real_rlimit_as_in_a_subprocess():
    code = ("import resource, torch; from makemore import memory; "
            "resource.setrlimit(resource.RLIMIT_AS, (3 << 30, resource.RLIM_INFINITY)); "
            "print(memory.available(torch.device('cpu')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)), check=True).stdout
    assert 0 < int(out) < 3 * GB


def cap_address_space():
    resource.setrlimit(resource.RLIMIT_AS, (3_000_000 * 1024, resource.RLIM_INFINITY))


@pytest.fixture(scope="module")
def data_files(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("memory")
    names = folder / "names.txt"
    names.write_text("\n".join((ROOT / "names.txt").read_text().splitlines()[::200]) + "\n", encoding="utf-8")
    wide = folder / "cjk.txt"  # 6,627 distinct characters, five to an item
    chars = [chr(0x4E00 + i) for i in range(6627)]
    wide.write_text("\n".join("".join(chars[i:i + 5]) for i in range(0, len(chars), 5)) + "\n", encoding="utf-8")
    return dict(names=names, wide=wide, out=folder / "out")


@pytest.mark.parametrize("args, what", [
    (["--n-hidden", "1048576"], "memory"),
    (["--model", "gru", "--n-hidden", "8192"], "memory"),
    (["--model", "bigram-nn", "--batch-size", "4000000"], "--batch-size"),
    (["--model", "bigram-nn", "--data", "wide"], "memory"),
    (["--threads", "1024"], "--threads"),
])
@pytest.mark.slow
def test_a_run_too_large_for_rlimit_as_is_refused_in_one_line(data_files, args, what):
    args = [str(data_files[a]) if a in data_files else a for a in args]
    data = [] if "--data" in args else ["--data", str(data_files["names"])]
    done = subprocess.run([sys.executable, "-m", "makemore", "train", *data, *args, "--steps", "2", "-q",
                           "--out", str(data_files["out"])], capture_output=True, text=True, timeout=120,
                          preexec_fn=cap_address_space, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert what in done.stderr
    assert not (data_files["out"] / "mlp.safetensors").exists()


def test_a_data_file_too_large_is_refused_by_its_size_before_it_is_read(run, tmp_path):
    big = tmp_path / "big.txt"
    with open(big, "wb") as f:  # sparse: nothing is written, and reading it would take 65 MB
        f.truncate(MAX_DATA_BYTES + (1 << 20))
    result = run("train", "--data", big, ok=False)
    assert result.exit_code == 1 and "65.0 MB" in result.output and "at most 64.0 MB" in result.output
    assert "Traceback" not in result.output


def test_a_data_file_whose_reading_would_not_fit_is_refused(monkeypatch, small_names):
    monkeypatch.setattr(memory, "available", lambda device, *rest: 10_000)
    with pytest.raises(DataError, match=r"reading its .* needs about .* of memory but this process has 0 MB available"):
        Data.read(small_names)


def test_threads_far_above_the_cores_are_refused():
    assert threads.choose(8, cores=2).threads == 8
    with pytest.raises(MakemoreError, match="--threads 9: .* 2 cores; give at most 8"):
        threads.choose(9, cores=2)


@pytest.fixture
def dev_set(small_names):
    data = Data.read(small_names)
    return Vocab.from_items(data.items), data.split()["dev"]


def test_evaluation_shrinks_its_chunks_to_fit_with_the_same_loss(monkeypatch, dev_set):
    vocab, items = dev_set
    cls = get_model_class("mlp")
    torch.manual_seed(0)
    net = cls(cls.Config(block_size=3, n_embd=4, n_hidden=8), len(vocab))
    ds = build_dataset(items, vocab, 3)
    whole = evaluate(net, ds)
    per_row = memory.row_bytes(cls, net.config, len(vocab))
    chunks = []
    original = ds.chunks
    monkeypatch.setattr(ds, "chunks", lambda size: chunks.append(size) or original(size))
    monkeypatch.setattr(memory, "available", lambda device, *rest: 2 * 7 * per_row)
    assert evaluate(net, ds) == pytest.approx(whole, rel=1e-6)  # float32 sums split differently
    assert chunks == [7]
    monkeypatch.setattr(memory, "available", lambda device, *rest: per_row)
    with pytest.raises(MakemoreError, match="one example of this mlp model needs about .* more than the"):
        evaluate(net, ds)


def test_a_row_of_attention_counts_heads_by_context_by_context(monkeypatch):
    monkeypatch.setattr(memory, "available", lambda device, *rest: 64 * GB)
    monkeypatch.setattr(memory, "CHUNK_BYTES", 64 * GB)
    cls = get_model_class("transformer")
    small = cls.Config(block_size=1024, n_head=1, n_embd=256, n_layer=1)
    wide = cls.Config(block_size=1024, n_head=256, n_embd=256, n_layer=1)
    extra = memory.row_bytes(cls, wide, 27) - memory.row_bytes(cls, small, 27)
    assert extra >= 255 * 1024 * 1024 * 4  # float32 attention weights: heads x T x T per row
    assert memory.rows_that_fit(cls, small, 27, CPU, 1024) == 1024
    assert memory.rows_that_fit(cls, wide, 27, CPU, 1024) < 32


def test_the_loss_of_several_steps_is_their_mean(dev_set):
    vocab, items = dev_set
    cls = get_model_class("bigram-nn")
    torch.manual_seed(0)
    net = cls(cls.Config(), len(vocab))
    x, y, _ = build_dataset(items, vocab, 1).tensors()
    optimizer = make_optimizer(net, TrainConfig(optimizer="sgd", lr=0.0))
    step = TrainStep(net, optimizer)
    losses = []
    for batch in (slice(0, 10), slice(10, 30), slice(30, 35)):
        losses.append(torch.nn.functional.cross_entropy(net(x[batch]), y[batch]).item())
        step(x[batch], y[batch], None, 0.0)
    assert step.take_loss().item() == pytest.approx(sum(losses) / 3, rel=1e-6)
    step(x[:4], y[:4], None, 0.0)
    assert step.take_loss().item() == pytest.approx(
        torch.nn.functional.cross_entropy(net(x[:4]), y[:4]).item(), rel=1e-6)


def test_mixture_probabilities_keep_a_subset_within_the_limit(dev_set):
    vocab, items = dev_set
    cls = get_model_class("bigram-nn")
    models = [cls(cls.Config(), len(vocab)) for _ in range(2)]
    ds = build_dataset(items, vocab, 1)
    full = mixing.target_probs(models, ds)
    assert full.shape == (len(ds), 2)
    part = mixing.target_probs(models, ds, limit=20)
    assert part.shape == (10, 2)
    assert all(any(torch.equal(row, other) for other in full) for row in part)


def test_plot_counts_refuses_a_vocabulary_too_large_to_draw(run, tmp_path):
    pytest.importorskip("matplotlib")
    chars = [chr(0x4E00 + i) for i in range(plots.MAX_TABLE_VOCAB)]
    data = tmp_path / "wide.txt"
    data.write_text("\n".join("".join(chars[i:i + 4]) for i in range(0, len(chars), 4)) + "\n", encoding="utf-8")
    run("train", "--model", "bigram", "--data", data, "-q")
    result = run("plot", "counts", ok=False)
    assert result.exit_code == 1 and "too large to draw" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_chunk_aims_at_chunk_bytes_however_much_memory_is_free(monkeypatch):
    """A large vocabulary's rows are few per chunk even with memory to spare; a row larger than a chunk is
    still one row when it fits."""
    monkeypatch.setattr(memory, "available", lambda device, *rest: 64 * GB)
    cls = get_model_class("bigram-nn")
    per_row = memory.row_bytes(cls, cls.Config(), 6628)
    rows = memory.rows_that_fit(cls, cls.Config(), 6628, CPU, 1 << 20)
    assert rows == memory.CHUNK_BYTES // per_row and rows * per_row <= memory.CHUNK_BYTES
    monkeypatch.setattr(memory, "CHUNK_BYTES", per_row // 2)
    assert memory.rows_that_fit(cls, cls.Config(), 6628, CPU, 1 << 20) == 1
