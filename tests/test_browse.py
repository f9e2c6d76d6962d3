"""`autodl studies` and `autodl show` on a finished study, checked against Optuna's own API."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import optuna
import pytest
from conftest import add_completed_trial
from test_cli import assert_refused, run_main

from autodl.browse import write_new_file
from autodl.cli import main
from autodl.storage import accuracy_rank, most_accurate_trial, pareto_front


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
    assert header.split() == ["name", "arch", "dataset", "objectives", "complete", "pruned",
                              "failed", "running", "best_val_acc", "test_acc", "created",
                              "updated"]
    study = load(storage, name)
    assert row.split()[:8] == [name, "mlp", "npz:tiny.npz", "accuracy", "3", "0", "0", "0"]
    assert f"{study.best_value:.4f}" in row
    assert f"{study.user_attrs['test']['accuracy']:.4f}" in row


def test_studies_json_for_machines(tiny_study, capsys):
    _, storage, name = tiny_study
    assert main(["studies", "--storage", storage, "--json"]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    study = load(storage, name)
    trials = study.trials
    assert record == {
        "name": name, "arch": "mlp", "dataset": "npz:tiny.npz", "objectives": "accuracy",
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
    best = most_accurate_trial(load(storage, name))
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


def test_show_ranks_trials_tied_in_accuracy_by_validation_loss(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path}/ties.db"
    study = optuna.create_study(study_name="ties", storage=storage, direction="maximize")
    study.set_user_attr("autodl", {"arch": "cnn", "dataset": "digits"})
    for val_loss in (0.05, 0.03):
        add_completed_trial(study, [0.98], val_loss)
    assert main(["show", "ties", "--storage", storage]) == 0
    out = capsys.readouterr().out
    assert "best trial           #1" in out
    top = out.split("Top 2 of 2 completed trials\n")[1].splitlines()
    assert top[0].split()[:3] == ["number", "val_accuracy", "val_loss"]
    assert [line.split()[:3] for line in top[1:]] == [["1", "0.9800", "0.03"],
                                                      ["0", "0.9800", "0.05"]]


def shown_csv(tmp_path: Path, storage: str, name: str,
              *options: str) -> list[tuple[dict[str, str], optuna.trial.FrozenTrial]]:
    """`autodl show --csv`'s rows, each with its trial; every trial has one, in order."""
    out = tmp_path / "trials.csv"
    assert main(["show", name, "--storage", storage, *options, "--csv", str(out)]) == 0
    rows = read_csv(out)
    trials = load(storage, name).trials
    assert [int(r["number"]) for r in rows] == [t.number for t in trials]
    return list(zip(rows, trials, strict=True))


def test_show_csv_has_every_trial_and_hyperparameter(tiny_study, tmp_path, capsys):
    _, storage, name = tiny_study
    for row, trial in shown_csv(tmp_path, storage, name, "--top", "1"):
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
    assert ("waiting  cnn  digits   accuracy        0      0      1       1            -        -"
            in capsys.readouterr().out)
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


def _section(out: str, heading: str) -> list[str]:
    """The lines of a part of `autodl show`'s output, below its heading."""
    return out.split(f"{heading}\n")[1].split("\n\n")[0].splitlines()


def test_studies_list_a_multi_objective_study(front_study, capsys):
    storage, name = front_study
    study = load(storage, name)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    most_accurate = max(t.values[0] for t in complete)
    assert main(["studies", "--storage", storage, "--json"]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert record["objectives"] == "accuracy,latency"
    assert (record["complete"], record["pruned"]) == (len(complete), 2)
    assert record["best_val_accuracy"] == most_accurate
    assert record["test_accuracy"] == 0.875  # the most accurate front model's
    assert main(["studies", "--storage", storage]) == 0
    header, row = capsys.readouterr().out.strip().splitlines()
    assert row.split()[3:5] == ["accuracy,latency", str(len(complete))]
    assert f"{most_accurate:.4f}   0.8750" in row


def test_show_prints_the_pareto_front_of_a_multi_objective_study(front_study, capsys):
    storage, name = front_study
    assert main(["show", name, "--storage", storage, "--top", "3"]) == 0
    out = capsys.readouterr().out
    study = load(storage, name)
    front = pareto_front(study)
    assert len(front) >= 2
    ranked = sorted(study.get_trials(states=[optuna.trial.TrialState.COMPLETE]),
                    key=accuracy_rank)
    assert "objectives  accuracy,latency" in out and "best trial" not in out
    header, *rows = _section(out, f"Pareto front: {len(front)} trials, most accurate first")
    assert header.split() == ["trial", "val_accuracy", "test_accuracy", "params", "size",
                              "latency_ms"]
    assert [row.split() for row in rows] == [
        [str(t.number), f"{t.values[0]:.4f}", "0.8750" if t is front[0] else "-",
         str(t.user_attrs["params_count"]), *("1.69 MB" if t is front[0] else "48.2 KB").split(),
         f"{t.values[1]:.4g}"]
        for t in front]
    header, *rows = _section(out, "Hyperparameters of the front's trials")
    assert header.split() == ["hyperparameter", *(f"#{t.number}" for t in front)]
    assert {row.split()[0] for row in rows} == set(front[0].user_attrs["hyperparameters"])
    history = _section(out, f"Per-epoch history of trial #{front[0].number}, the front's "
                            "most accurate")
    assert len(history) == 1 + len(front[0].user_attrs["history"])
    top = _section(out, f"Top 3 of {len(ranked)} completed trials")
    assert top[0].split()[:8] == ["number", "val_accuracy", "val_loss", "epochs", "train_seconds",
                                  "params_count", "size_bytes", "latency_ms"]
    assert [line.split()[:2] for line in top[1:]] == [
        [str(t.number), f"{t.values[0]:.4f}"] for t in ranked[:3]]


def test_show_of_one_objective_has_no_deployment_columns(tiny_study, capsys):
    _, storage, name = tiny_study
    assert main(["show", name, "--storage", storage]) == 0
    out = capsys.readouterr().out
    assert "Pareto front" not in out
    for column in ("size_bytes", "latency_ms", "latency_runtime", "pruned_because",
                   "resumes_trial", "resumed_from_epoch"):  # no trial was lost
        assert column not in out


def test_show_csv_carries_the_deployment_costs(front_study, tmp_path):
    storage, name = front_study
    shown = shown_csv(tmp_path, storage, name)
    for row, trial in shown:
        attrs = trial.user_attrs
        assert row["state"] == trial.state.name
        assert row["val_accuracy"] == ("" if trial.values is None else str(trial.values[0]))
        assert int(row["size_bytes"]) == attrs["size_bytes"]
        assert float(row["latency_ms"]) == attrs["latency_ms"]
        assert row["latency_runtime"] == attrs["latency_runtime"]
        assert row["pruned_because"] == attrs.get("pruned_because", "")
    last, _ = shown[-1]  # pruned before training, over a limit
    assert last["epochs"] == "0" and last["pruned_because"].startswith("over --max-latency")


def test_sizes_read_in_decimal_units():
    from autodl.browse import readable_size

    assert readable_size(1_690_000) == "1.69 MB"
    assert readable_size(48_200) == "48.2 KB"
    assert readable_size(None) is None
