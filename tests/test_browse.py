"""`autodl studies` and `autodl show` on a finished study, checked against Optuna's own API."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import optuna
import pytest
from test_cli import assert_refused, run_main

from autodl.browse import write_new_file
from autodl.cli import main


def load(storage: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=storage)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".partial")]


def test_studies_table_for_people(tiny_study, capsys):
    _, storage, name = tiny_study
    assert main(["studies", "--storage", storage]) == 0
    header, row = capsys.readouterr().out.strip().splitlines()
    assert header.split() == ["name", "arch", "dataset", "complete", "pruned", "failed",
                              "running", "best_val_acc", "test_acc", "created", "updated"]
    study = load(storage, name)
    assert row.split()[:7] == [name, "mlp", "npz:tiny.npz", "3", "0", "0", "0"]
    assert f"{study.best_value:.4f}" in row
    assert f"{study.user_attrs['test']['accuracy']:.4f}" in row


def test_studies_json_for_machines(tiny_study, capsys):
    _, storage, name = tiny_study
    assert main(["studies", "--storage", storage, "--json"]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    study = load(storage, name)
    trials = study.trials
    assert record == {
        "name": name, "arch": "mlp", "dataset": "npz:tiny.npz",
        "complete": 3, "pruned": 0, "failed": 0, "running": 0,
        "best_val_accuracy": study.best_value,
        "test_accuracy": study.user_attrs["test"]["accuracy"],
        "created": trials[0].datetime_start.isoformat(timespec="seconds"),
        "updated": trials[-1].datetime_complete.isoformat(timespec="seconds"),
    }


def test_studies_csv_is_written_once_unless_forced(tiny_study, tmp_path, capsys):
    _, storage, name = tiny_study
    out = tmp_path / "studies.csv"
    assert main(["studies", "--storage", storage, "--csv", str(out)]) == 0
    (row,) = read_csv(out)
    study = load(storage, name)
    assert row["name"] == name and row["complete"] == "3" and row["running"] == "0"
    assert float(row["best_val_accuracy"]) == study.best_value
    assert float(row["test_accuracy"]) == study.user_attrs["test"]["accuracy"]
    assert name in capsys.readouterr().out  # the table is still printed

    out.write_text("mine")
    assert_refused(["studies", "--storage", storage, "--csv", str(out)],
                   f"{out} already exists; pass --force to replace it", capsys)
    assert out.read_text() == "mine"
    assert main(["studies", "--storage", storage, "--csv", str(out), "--force"]) == 0
    assert read_csv(out)[0]["name"] == name
    assert leftovers(tmp_path) == []


def test_show_prints_the_best_trial_in_full_and_the_top_trials(tiny_study, capsys):
    _, storage, name = tiny_study
    assert main(["show", name, "--storage", storage, "--top", "2"]) == 0
    out = capsys.readouterr().out
    best = load(storage, name).best_trial
    attrs = best.user_attrs
    assert f"best trial           #{best.number}" in out
    assert f"validation accuracy  {best.value:.4f}" in out
    assert f"parameters           {attrs['params_count']:,}" in out
    assert f"train seconds        {attrs['train_seconds']:.4g}" in out
    for hp_name in attrs["hyperparameters"]:
        assert f"\n  {hp_name} " in out
    history = out.split(f"Per-epoch history of trial #{best.number}\n")[1].split("\n\n")[0]
    lines = history.splitlines()
    assert lines[0].split() == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy",
                                "learning_rate", "seconds"]
    assert [line.split()[0] for line in lines[1:]] == [
        str(h["epoch"]) for h in attrs["history"]]
    top = out.split("Top 2 of 3 completed trials\n")[1].splitlines()
    assert top[0].split()[:2] == ["number", "val_accuracy"]
    assert top[1].split()[0] == str(best.number)
    assert len(top) == 3


def test_show_csv_has_every_trial_and_hyperparameter(tiny_study, tmp_path, capsys):
    _, storage, name = tiny_study
    out = tmp_path / "trials.csv"
    assert main(["show", name, "--storage", storage, "--top", "1", "--csv", str(out)]) == 0
    rows = read_csv(out)
    trials = load(storage, name).trials
    assert [int(r["number"]) for r in rows] == [t.number for t in trials]
    for row, trial in zip(rows, trials, strict=True):
        assert row["state"] == "COMPLETE"
        assert float(row["val_accuracy"]) == trial.value
        assert int(row["epochs"]) == trial.user_attrs["stopped_epoch"]
        assert int(row["params_count"]) == trial.user_attrs["params_count"]
        for hp_name, value in trial.user_attrs["hyperparameters"].items():
            assert row[f"hp_{hp_name}"] == str(value)
    assert "Top 1 of 3 completed trials" in capsys.readouterr().out
    assert leftovers(tmp_path) == []


@pytest.fixture
def unfinished(tmp_path: Path) -> str:
    """A storage with an empty study and one whose trials failed or are still running."""
    storage = f"sqlite:///{tmp_path}/other.db"
    optuna.create_study(study_name="empty", storage=storage)
    study = optuna.create_study(study_name="waiting", storage=storage, direction="maximize")
    study.set_user_attr("autodl", {"arch": "cnn", "dataset": "digits"})
    study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)
    study.ask()  # still running
    return storage


def test_studies_without_a_completed_trial(unfinished, capsys):
    assert main(["studies", "--storage", unfinished, "--json"]) == 0
    empty, waiting = json.loads(capsys.readouterr().out)
    assert empty["name"] == "empty" and empty["arch"] is None
    assert empty["created"] is None and empty["best_val_accuracy"] is None
    assert (waiting["arch"], waiting["failed"], waiting["running"]) == ("cnn", 1, 1)
    assert waiting["best_val_accuracy"] is None and waiting["test_accuracy"] is None
    assert main(["studies", "--storage", unfinished]) == 0
    assert "waiting  cnn  digits        0      0      1       1            -        -" in (
        capsys.readouterr().out)
    assert_refused(["show", "waiting", "--storage", unfinished],
                   "study 'waiting' has no completed trial yet (0 complete, 0 pruned, "
                   "1 failed, 1 running)", capsys)


def test_storage_without_studies(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path}/none.db"
    optuna.storages.RDBStorage(storage)  # an Optuna database with no study
    assert main(["studies", "--storage", storage]) == 0
    assert capsys.readouterr().out == f"No studies in {storage}.\n"
    assert main(["studies", "--storage", storage, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_bad_input_is_one_line_exit_2_and_writes_nothing(tiny_study, tmp_path, capsys):
    _, storage, name = tiny_study
    missing = f"sqlite:///{tmp_path}/missing.db"
    cases = [
        (["show", "nope", "--storage", storage], f"no study 'nope' in {storage}; studies: tiny"),
        (["show", name, "--storage", missing], f"no study storage at {missing}"),
        (["studies", "--storage", missing], f"no study storage at {missing}"),
        (["studies", "--storage", "nonsense"], "malformed storage URL 'nonsense'"),
        (["show", name, "--storage", storage, "--top", "0"], "--top must be at least 1"),
        (["show", name, "--storage", storage, "--top", "x"], "argument --top: invalid int"),
        (["show", name, "--storage", storage, "--csv", str(tmp_path / "no" / "t.csv")],
         f"folder does not exist: {tmp_path / 'no'}"),
        (["studies", "--storage", storage, "--csv", str(tmp_path)],
         f"{tmp_path} is a folder; give a file name"),
    ]
    for args, message in cases:
        assert_refused(args, message, capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    target = tmp_path / "out.csv"
    with pytest.raises(UnicodeEncodeError):
        write_new_file(str(target), "a,b\n\ud800\n")  # not encodable: fails mid-write
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["studies", "show", "dashboard"])
def test_help(command, capsys):
    assert run_main([command, "--help"]) == 0
    assert "--storage" in capsys.readouterr().out
