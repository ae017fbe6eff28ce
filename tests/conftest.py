import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from makemore.cli import cli

# the lecture's file beside the checkout; MAKEMORE_NAMES_2018 points elsewhere (e.g. from a git worktree)
SHARED_NAMES = Path(os.environ.get("MAKEMORE_NAMES_2018")
                    or Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "names-2018.txt")
REPO_NAMES = Path(__file__).resolve().parent.parent / "names.txt"


@pytest.fixture
def small_names(tmp_path) -> Path:
    """A few hundred real names from the project's names.txt, every 50th line."""
    lines = REPO_NAMES.read_text(encoding="utf-8").splitlines()[::50]
    path = tmp_path / "names.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def names_file(tmp_path_factory) -> Path:
    """Every 50th name of names.txt (about 650)."""
    path = tmp_path_factory.mktemp("data") / "names.txt"
    path.write_text("\n".join(REPO_NAMES.read_text(encoding="utf-8").splitlines()[::50]) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def names(small_names) -> Path:
    return small_names


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: the tests' tiny models gain nothing from more, and on a busy machine the
    spinning threads of a second one make each step ten times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def run(tmp_path, monkeypatch):
    """Invoke the real CLI in a temporary working directory; returns click's Result."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MAKEMORE_DEBUG", "")
    runner = CliRunner()

    def invoke(*args, ok=True):
        result = runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, result.output
        return result

    return invoke


def invoke(*args):
    """The real CLI in this process, in the current folder; returns click's Result."""
    return CliRunner(env={"MAKEMORE_DEBUG": ""}).invoke(cli, [str(a) for a in args], catch_exceptions=False)


def ok(*args):
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return result


def needs_shared_names():
    return pytest.mark.skipif(not SHARED_NAMES.exists(), reason="../shared/data/names-2018.txt is absent")


@pytest.fixture
def batch_sizes(monkeypatch) -> list[int]:
    """The rows of every batch sampling draws from now on, in order."""
    from makemore import sampling

    sizes, draw = [], sampling.draw_batch

    def recording(model, prefix_ids, keys, *args, **kwargs):
        sizes.append(len(keys))
        return draw(model, prefix_ids, keys, *args, **kwargs)

    monkeypatch.setattr(sampling, "draw_batch", recording)
    return sizes
