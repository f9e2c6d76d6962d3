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


def test_search_benchmark_runs_at_smallest_budget(tmp_path):
    out = tmp_path / "results"
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "search.py"), "--dataset", "digits",
         "--seeds", "1", "--trials", "2", "--epochs", "1", "--max-samples", "300",
         "--out", str(out)],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "machine: " in result.stdout
    rows = (out / "search-digits.md").read_text().splitlines()
    for column in ("autodl", "kt-hyperband", "kt-random", "optuna-random"):
        assert sum(row.startswith(f"| {column} |") for row in rows) == 1, column
    assert (out / "search-digits.png").read_bytes().startswith(b"\x89PNG")
