"""The benchmarks run at their smallest budget, so they cannot rot unnoticed."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO


@pytest.mark.parametrize(("script", "args", "expected"), [
    ("overhead.py", ["--trials", "1", "--epochs", "1"], "fit time ratio autodl/plain"),
    ("memory.py", ["--trials", "6", "--window", "1", "--trials-per-worker", "2"],
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


def test_pareto_hypervolume_by_hand(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import pareto

    # Reference (accuracy 0.90, latency 5 ms). (0.94, 3) is beaten by (0.95, 2); (0.99, 6)
    # is slower than the reference and (0.85, 1) less accurate: neither adds area.
    points = [(0.95, 2.0), (0.98, 4.0), (0.94, 3.0), (0.99, 6.0), (0.85, 1.0)]
    # From 2 to 4 ms at height 0.05, from 4 to 5 ms at height 0.08.
    assert pareto.hypervolume(points, (0.90, 5.0)) == pytest.approx(0.05 * 2 + 0.08 * 1)
    assert pareto.normalised_hypervolume(points, (0.90, 5.0)) == pytest.approx(0.18 / 0.5)
    assert pareto.hypervolume([], (0.90, 5.0)) == 0.0
    assert pareto.hypervolume([(0.95, 2.0)], (0.90, 5.0)) == pytest.approx(0.15)
    assert pareto.front_indices(points) == [0, 1, 3, 4]
    curve = [(0.0, 0.0), (5.0, 0.1), (9.0, 0.3)]
    assert pareto.reached_at(curve, 0.3) == 9.0 and pareto.reached_at(curve, 0.31) is None


def scored_trial(number, values, test, tflite_ms):
    """A completed trial of a pareto run, as the analysis leaves it."""
    return {"number": number, "state": "COMPLETE", "values": values,
            "complete": float(number), "test": test, "tflite_ms": tflite_ms}


def test_pareto_handed_back_front_is_chosen_by_the_study_own_values(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import pareto

    # Trial 1 timed itself slower than trial 0 and is less accurate: the study drops it,
    # though the analysis's timing finds it the fastest model. The bar's curve keeps it.
    run = {"trials": [scored_trial(0, [0.98, 1.0], 0.98, 2.0),
                      scored_trial(1, [0.96, 3.0], 0.96, 1.0),
                      {"number": 2, "state": "PRUNED", "values": None, "complete": 2.0}]}
    reference = (0.90, 4.0)
    handed_back = pareto.handed_back_curve(run, reference)
    assert [t for t, _ in handed_back] == [0.0, 0.0, 1.0]
    assert handed_back[-1][1] == pytest.approx(
        pareto.normalised_hypervolume([(0.98, 2.0)], reference))
    run["trials"] = run["trials"][:2]
    assert pareto.hypervolume_curve(run, reference)[-1][1] == pytest.approx(
        pareto.normalised_hypervolume([(0.98, 2.0), (0.96, 1.0)], reference))


def test_pareto_timed_alike_front_is_chosen_by_validation_accuracy_and_the_analysis_latency(
        monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import pareto

    # Trial 1: timed slow by its study, fastest by the analysis: timed alike, it is on the
    # front. Trial 2: best on the test split, but below trial 0 in validation accuracy and
    # slower by the analysis: only the bar's curve, which chooses by test accuracy, has it.
    run = {"trials": [scored_trial(0, [0.98, 1.0], 0.98, 2.0),
                      scored_trial(1, [0.96, 3.0], 0.96, 1.0),
                      scored_trial(2, [0.97, 0.5], 0.99, 2.5)]}
    reference = (0.90, 4.0)
    timed_alike = pareto.timed_alike_curve(run, reference)
    assert [t for t, _ in timed_alike] == [0.0, 0.0, 1.0, 2.0]
    assert timed_alike[-1][1] == pytest.approx(
        pareto.normalised_hypervolume([(0.98, 2.0), (0.96, 1.0)], reference))
    assert pareto.hypervolume_curve(run, reference)[-1][1] == pytest.approx(
        pareto.normalised_hypervolume([(0.98, 2.0), (0.96, 1.0), (0.99, 2.5)], reference))
    assert pareto.handed_back_curve(run, reference)[-1][1] == pytest.approx(
        pareto.normalised_hypervolume([(0.98, 2.0), (0.99, 2.5)], reference))


def test_pareto_benchmark_runs_at_smallest_budget(tmp_path, shared_datasets):
    import json

    out = tmp_path / "results"
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "pareto.py"),
         "--dataset", f"idx:{shared_datasets / 'mnist'}", "--seeds", "1", "--trials", "2",
         "--epochs", "1", "--max-samples", "300", "--constraint-trials", "2",
         # Models of 216 images and one epoch are far below 0.90: every point counts.
         "--ref-accuracy", "0", "--out", str(out)],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Machine: " in result.stdout
    data = json.loads((out / "pareto.json").read_text())
    runs = data["runs"]
    assert sorted(run["column"] for run in runs) == ["autodl", "autodl-unpruned", "optuna-mo"]
    assert len({run["split"] for run in runs}) == 1  # every column had autodl's split
    for run in runs:
        assert len(run["trials"]) == 2 and run["wall"] > 0, run["column"]
        scored = [trial for trial in run["trials"] if trial.get("test") is not None]
        assert scored, run["column"]  # the first trial completes, so it is on the front
        for trial in scored:
            assert 0.0 <= trial["test"] <= 1.0 and trial["tflite_ms"] > 0
            assert 0 < trial["start"] <= trial["complete"] <= run["wall"]
    assert all(trial.get("test") is not None
               for run in runs if run["column"] == "optuna-mo" for trial in run["trials"])
    (ratios,) = data["ratios"]
    assert ratios["H"] > 0 and ratios["W"] > 0 and {"autodl", "autodl-unpruned"} <= set(ratios)
    for other in ("handed_back_ratios", "timed_alike_ratios"):  # the fronts beside the bar's
        (row,) = data[other]
        assert row["seed"] == 0 and {"autodl", "autodl-unpruned"} <= set(row), other
    assert [r["rule"] for r in data["replays"]][0] == "as shipped"  # then, maybe, variants
    for replay in data["replays"]:
        assert replay["epochs_replayed"] <= replay["epochs"] and replay["trials"] == 2
    assert [c["option"] for c in data["constraints"]] == ["--max-latency", "--max-params"]
    for constraint in data["constraints"]:
        assert constraint["trials"] == 2
        assert all(cost["own"] >= 0 and cost["total"] >= cost["own"]
                   for cost in constraint["costs"])
    text = (out / "pareto.md").read_text()
    rows = text.splitlines()
    for column in ("autodl", "autodl-unpruned", "optuna-mo"):
        assert sum(row.startswith(f"| {column} |") for row in rows) == 2, column  # 2 tables
    assert "| autodl reaches optuna-mo's final hypervolume" in text
    assert "## Per seed: the fronts chosen by validation accuracy, timed alike" in text
    assert "| `--max-latency " in text and "| `--max-params " in text
    assert (out / "pareto.png").read_bytes().startswith(b"\x89PNG")
