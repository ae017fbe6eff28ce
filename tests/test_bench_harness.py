"""bench/run.py: every module runs, a failing one is reported in its section and the others still run."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # subprocesses and torchrun: the full suite's tier

BENCH = Path(__file__).resolve().parent.parent / "bench"


def test_run_reports_each_module_and_survives_a_failure(tmp_path):
    bench = tmp_path / "bench"
    bench.mkdir()
    for name in ("run.py", "common.py"):
        shutil.copy(BENCH / name, bench / name)
    (bench / "bench_alpha.py").write_text(
        "def run(data):\n    print('stray output')\n    return f'## alpha\\n\\ndata given: {data is not None}\\n'\n")
    (bench / "bench_beta.py").write_text("def run():\n    raise RuntimeError('beta broke')\n")
    (bench / "bench_gamma.py").write_text("def run():\n    return '## gamma\\n\\nfine\\n'\n")
    data = tmp_path / "names.txt"
    data.write_text("emma\nolivia\n")

    done = subprocess.run([sys.executable, str(bench / "run.py"), "--data", str(data)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr  # one module failed
    report = (tmp_path / "BENCHMARKS.md").read_text()
    assert "| bench_alpha | ok |" in report and "| bench_beta | failed |" in report
    assert "| bench_gamma | ok |" in report
    assert "## alpha\n\ndata given: True" in report and "stray output" not in report
    assert "## bench_beta: not measured" in report and "RuntimeError: beta broke" in report
    assert report.index("## alpha") < report.index("## bench_beta") < report.index("## gamma")
    assert (bench / "results" / "gamma.md").read_text() == "## gamma\n\nfine\n"
