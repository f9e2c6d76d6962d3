"""The benchmarks run at their smallest budget, so they cannot rot unnoticed."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO


@pytest.mark.parametrize(("script", "args", "expected"), [
    ("overhead.py", ["--trials", "1", "--epochs", "1"], "fit time ratio autodl/plain"),
    ("memory.py", ["--trials", "2", "--early", "1"], "peak ratio"),
    ("report.py", ["--trials", "2"], "report seconds on 2 trials"),
    ("throughput.py", ["--trials", "2", "--workers", "2"], "| sqlite | 2 |"),
])
def test_benchmark_runs_at_smallest_budget(script, args, expected, tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert expected in result.stdout and "machine: " in result.stdout
