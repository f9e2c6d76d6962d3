"""Several worker processes on one study (`--workers`)."""

from __future__ import annotations

import optuna
from conftest import tune_args

from autodl.cli import main


def test_two_workers_share_one_sqlite_study_without_locking_failures(in_tmp, tiny_npz, capsys):
    args = tune_args(f"npz:{tiny_npz}", "--study", "w", "--workers", "2", trials=6)
    assert main(args) == 0
    study = optuna.load_study(study_name="w", storage="sqlite:///studies/autodl.db")
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") + states.count("PRUNED") == 6, states
    assert "FAIL" not in states and "RUNNING" not in states
    numbers = [t.number for t in study.trials]
    assert numbers == list(range(len(numbers)))
    out = capsys.readouterr().out
    # Every trial was reported by the parent, whichever worker ran it.
    assert sorted(int(line.split()[1]) for line in out.splitlines()
                  if line.startswith("trial ")) == numbers
    assert "test accuracy" in out and "exited with code" not in out
    # The workers' samplers are seeded differently: they did not repeat each other.
    params = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(params)) == len(params)
