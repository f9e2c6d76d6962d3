"""The benchmarks run at their smallest budget, so they cannot rot unnoticed."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO


@pytest.mark.parametrize(("script", "args", "expected"), [
    ("overhead.py", ["--trials", "1", "--epochs", "1"], "fit time ratio autodl/plain"),
    ("memory.py", ["--trials", "4", "--window", "1", "--trials-per-worker", "2"],
     "| one process |"),
    ("report.py", ["--trials", "2"], "report seconds on 2 trials"),
    ("workers.py", ["--trials", "2", "--epochs", "1", "--repeats", "1"],
     "same trials (states, parameters, values) in both: yes"),
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


def test_time_to_accuracy_benchmark_runs_at_smallest_budget(tmp_path, shared_datasets):
    import importlib.util
    import json

    columns = ["autodl", "kt-hyperband", "kt-random"]
    if importlib.util.find_spec("optuna_integration") is not None:  # autodl[bench]
        columns.append("optuna-tpe-hyperband")
    out = tmp_path / "results"
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "time_to_accuracy.py"),
         "--dataset", f"idx:{shared_datasets / 'mnist'}", "--columns", ",".join(columns),
         "--seeds", "1", "--trials", "2", "--epochs", "1", "--max-samples", "600",
         "--out", str(out)],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Machine: " in result.stdout
    runs = json.loads((out / "time-to-accuracy.json").read_text())
    assert sorted(run["column"] for run in runs) == sorted(columns)
    assert len({run["split"] for run in runs}) == 1  # every tool had autodl's split
    for run in runs:
        assert 0.0 <= run["test"] <= 1.0 and run["wall"] > 0, run["column"]
        assert run["epochs"] >= 1 and run["trials"] >= 1 and run["final_fit_seconds"] > 0
        seconds = [t for t, _ in run["points"]]
        assert seconds == sorted(seconds) and 0 < seconds[0] and seconds[-1] <= run["wall"]
        best = [value for _, value in run["points"]]
        curve = [max(best[:i + 1]) for i in range(len(best))]
        assert curve == sorted(curve) and curve[-1] >= run["best_val"] - 1e-6
    rows = (out / "time-to-accuracy.md").read_text().splitlines()
    for column in columns:
        assert sum(row.startswith(f"| {column} |") for row in rows) == 2, column  # 2 tables
    assert (out / "time-to-accuracy.png").read_bytes().startswith(b"\x89PNG")


def test_checkpoint_benchmark_runs_at_smallest_budget(tmp_path, shared_datasets):
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "checkpoint.py"), "--part", "both",
         "--kills", "1", "--trials", "2", "--epochs", "2", "--cost-trials", "1",
         "--cost-epochs", "2", "--cost-repeats", "1"],
        capture_output=True, text=True, cwd=tmp_path, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "machine: " in result.stdout
    assert "| checkpoints (every epoch) | 2 of 2 | yes |" in result.stdout
    assert "direct, one process" in result.stdout
