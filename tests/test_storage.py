"""Storage: crash and resume, study facts, and storage safety."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import time

import optuna
import pytest
from conftest import add_completed_trial, tune_args

from autodl import storage
from autodl.errors import AutodlError

STORAGE = "sqlite:///studies/autodl.db"


def autodl(cwd, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "autodl", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_kill_9_mid_trial_then_rerun_resumes_and_retries_the_lost_trial(in_tmp, tiny_npz):
    data = f"npz:{tiny_npz}"
    first = autodl(in_tmp, *tune_args(data, "--study", "k", "--heartbeat", "1", trials=2))
    assert first.returncode == 0, first.stderr
    before = {t.number: (t.state, t.value, t.params) for t in
              optuna.load_study(study_name="k", storage=STORAGE).trials}

    # Long trials, so the kill lands in the middle of one.
    long_run = tune_args(data, "--study", "k", "--heartbeat", "1", "--epochs", "1000",
                         "--patience", "1000", "--pruner", "none", trials=4)
    process = subprocess.Popen([sys.executable, "-m", "autodl", *long_run], cwd=in_tmp,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in process.stdout:
        if line.startswith("Data:"):
            break
    while len(optuna.load_study(study_name="k", storage=STORAGE).trials) < 3:
        time.sleep(0.5)  # until its worker starts the trial
    time.sleep(3)  # the trial is training and has sent heartbeats
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    time.sleep(1)  # its worker ends when it sees autodl gone: no trial runs on unseen
    killed = optuna.load_study(study_name="k", storage=STORAGE).trials[-1]
    assert killed.state.name == "RUNNING" and killed.number == 2

    time.sleep(2.5)  # past the grace period (twice the heartbeat)
    rerun = autodl(in_tmp, *tune_args(data, "--study", "k", "--heartbeat", "1", trials=4))
    assert rerun.returncode == 0, rerun.stderr
    trials = optuna.load_study(study_name="k", storage=STORAGE).trials
    assert {t.number: (t.state, t.value, t.params) for t in trials[:2]} == before
    assert trials[2].state.name == "FAIL"
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == 2]
    assert len(retries) == 1 and retries[0].params == killed.params
    assert retries[0].state.name in ("COMPLETE", "PRUNED")
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials) == 4
    # The lost trial is reported as lost, once, not as a new trial.
    lines = [line for line in rerun.stdout.splitlines() if line.startswith("trial    2 ")]
    assert len(lines) == 1 and "FAIL" in lines[0] and "is gone" in lines[0]


def test_open_study_records_facts_and_refuses_another_dataset(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    facts = {"arch": "mlp", "dataset": "digits", "objectives": ["accuracy"]}
    sampler, pruner = optuna.samplers.RandomSampler(), optuna.pruners.NopPruner()
    study = storage.open_study(storage.open_storage(url), "s", facts, sampler, pruner)
    assert study.user_attrs[storage.FACTS_KEY] == facts
    assert study.metric_names == ["val_accuracy"]  # optuna-dashboard's name for the value
    again = storage.open_study(storage.open_storage(url), "s", facts, sampler, pruner)
    assert again._study_id == study._study_id
    with pytest.raises(AutodlError, match="was run with dataset 'digits', not 'mnist'"):
        storage.open_study(storage.open_storage(url), "s", {**facts, "dataset": "mnist"},
                           sampler, pruner)
    with pytest.raises(AutodlError, match="was tuned for --objective accuracy, not "
                                          "accuracy,latency; continue it with those"):
        storage.open_study(storage.open_storage(url), "s",
                           {**facts, "objectives": ["accuracy", "latency"]}, sampler, pruner)


def test_a_study_of_an_older_autodl_gets_its_metric_named(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    old = optuna.create_study(study_name="s", storage=url, direction="maximize")
    old.set_user_attr(storage.FACTS_KEY, {"arch": "mlp", "dataset": "digits"})
    facts = {"arch": "mlp", "dataset": "digits", "objectives": ["accuracy"]}
    study = storage.open_study(storage.open_storage(url), "s", facts,
                               optuna.samplers.RandomSampler(), optuna.pruners.NopPruner())
    assert storage.study_objectives(study) == ["accuracy"]
    assert study.metric_names == ["val_accuracy"]


def test_a_file_that_is_not_a_database_is_refused_and_left_unchanged(tmp_path):
    db = tmp_path / "notes.db"
    db.write_bytes(b"these are my notes, not a database\n" * 20)
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    with pytest.raises(AutodlError, match="cannot open storage"):
        storage.open_storage(f"sqlite:///{db}")
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest


def test_a_run_that_loses_the_race_to_create_the_tables_tries_again(tmp_path, monkeypatch):
    """Two runs started together on a new SQLite file both create Optuna's tables; the
    loser's CREATE TABLE fails with the error SQLite gives, and it must open the file."""
    import sqlalchemy

    with sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'other.db'}").connect() as other:
        other.execute(sqlalchemy.text("CREATE TABLE studies (id INTEGER)"))
        try:
            other.execute(sqlalchemy.text("CREATE TABLE studies (id INTEGER)"))
        except sqlalchemy.exc.OperationalError as error:
            lost_race = error
    real_storage, attempts = storage._RDBStorage, []

    def racing_storage(*args, **kwargs):
        attempts.append(1)
        if len(attempts) == 1:
            raise lost_race
        return real_storage(*args, **kwargs)

    monkeypatch.setattr(storage, "_RDBStorage", racing_storage)
    opened = storage.open_storage(f"sqlite:///{tmp_path / 'new.db'}")
    assert len(attempts) == 2 and opened.get_all_studies() == []


def test_a_heartbeat_that_cannot_be_written_waits_for_the_next_beat(tmp_path, monkeypatch):
    """Optuna beats from a thread of its own: a failed write there printed a traceback
    (the trial's own next write stops the study with one line) and ended the beats."""
    import sqlite3

    import sqlalchemy

    opened = storage.open_storage(f"sqlite:///{tmp_path / 's.db'}", heartbeat=1)
    trial = optuna.create_study(storage=opened).ask()
    full = sqlalchemy.exc.OperationalError(
        "UPDATE trial_heartbeats", {}, sqlite3.OperationalError("database or disk is full"))
    beats = []

    def failing_beat(self, trial_id):
        beats.append(trial_id)
        raise full if len(beats) == 1 else ValueError("not a write failure")

    monkeypatch.setattr(optuna.storages.RDBStorage, "record_heartbeat", failing_beat)
    opened.record_heartbeat(trial._trial_id)
    with pytest.raises(ValueError):
        opened.record_heartbeat(trial._trial_id)
    assert beats == [trial._trial_id] * 2


def test_artifact_and_model_paths_follow_the_sqlite_file():
    assert str(storage.artifact_dir("sqlite:///runs/x.db")) == "runs/artifacts"
    assert str(storage.best_model_path("sqlite:///runs/x.db", "s")) == "runs/models/s.keras"
    assert str(storage.artifact_dir("postgresql://u@h/db")) == "studies/artifacts"


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_sqlite_database_that_is_not_optunas_is_refused_and_left_unchanged(tmp_path):
    import sqlite3

    db = tmp_path / "shop.db"
    with sqlite3.connect(db) as connection:
        connection.execute("create table orders (id integer primary key, item text)")
        connection.execute("insert into orders (item) values ('keyboard')")
    digest = _digest(db)
    with pytest.raises(AutodlError, match="cannot open storage"):
        storage.open_storage(f"sqlite:///{db}")
    assert _digest(db) == digest


def test_an_optuna_database_of_another_schema_version_is_refused_and_left_unchanged(tmp_path):
    import sqlite3

    db = tmp_path / "old.db"
    optuna.create_study(study_name="old", storage=f"sqlite:///{db}")
    with sqlite3.connect(db) as connection:
        connection.execute("update alembic_version set version_num = 'v2.6.0.a'")
    digest = _digest(db)
    with pytest.raises(AutodlError, match="cannot open storage .*compatible"):
        storage.open_storage(f"sqlite:///{db}")
    assert _digest(db) == digest


def test_a_joining_run_uses_the_studys_recorded_split(in_tmp, tiny_npz, monkeypatch):
    from autodl import tuner
    from autodl.cli import main

    data = f"npz:{tiny_npz}"
    assert main(tune_args(data, "--study", "j", trials=1)) == 0  # --seed 1
    used = []
    real_run_trials = tuner.run_trials

    def spy(study, hypermodel, splits, config, listener, *args):
        used.append(splits)
        return real_run_trials(study, hypermodel, splits, config, listener, *args)

    monkeypatch.setattr(tuner, "run_trials", spy)
    # Another machine, or a later run, with another seed and validation fraction; in
    # this process, for the spy (a worker process reads the recorded split itself).
    assert main(tune_args(data, "--study", "j", "--seed", "7", "--val-split", "0.3",
                          "--workers", "0", trials=2)) == 0
    recorded = storage.study_splits(storage.load_existing(STORAGE, "j"))
    assert len(used) == 1
    assert (used[0].x_val == recorded.x_val).all() and len(used[0].x_val) == len(recorded.x_val)
    facts = storage.load_existing(STORAGE, "j").user_attrs[storage.FACTS_KEY]
    assert facts["split_seed"] == 1 and facts["val_split"] == 0.1


def test_models_go_to_the_shared_artifacts_folder_readers_find_it(in_tmp, tiny_npz, capsys):
    from autodl.cli import main

    shared = in_tmp / "nfs" / "models"
    data = f"npz:{tiny_npz}"
    assert main(tune_args(data, "--study", "a", "--artifacts", str(shared), trials=2)) == 0
    study = storage.load_existing(STORAGE, "a")
    artifact = storage.most_accurate_trial(study).user_attrs["model_artifact_id"]
    assert (shared / artifact).is_file()
    assert not (in_tmp / "studies" / "artifacts" / artifact).exists()
    assert storage.study_artifact_dir(study, STORAGE) == shared.resolve()
    assert main(["export", "a", "--out", "exported", "--format", "keras"]) == 0
    assert (in_tmp / "exported").is_dir()

    # A worker whose artifact folder lacks the best model still ends well, and says why.
    capsys.readouterr()
    assert main(tune_args(data, "--study", "a", "--artifacts", "elsewhere", trials=2)) == 0
    out = capsys.readouterr().out
    best = storage.most_accurate_trial(study)
    assert f"Model:  not evaluated: the model of trial #{best.number} is not in " \
           "elsewhere" in out
    assert "shared --artifacts folder" in out


def test_concurrent_downloads_of_one_model_do_not_collide(tiny_study, tmp_path):
    import threading

    folder, url, name = tiny_study
    study = storage.load_existing(url, name)
    store = storage.ModelStore(folder / "studies" / "artifacts")
    target = tmp_path / "out" / "best.keras"
    errors = []

    def download() -> None:
        try:
            store.download(storage.most_accurate_trial(study), target)
        except Exception as error:  # noqa: BLE001 (reported by the assertion below)
            errors.append(error)

    threads = [threading.Thread(target=download) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [p.name for p in target.parent.iterdir()] == ["best.keras"]  # no staging left


@pytest.fixture
def mount_point(tmp_path):
    """A fresh tmpfs of 4 MiB (root only: we run as root, so permissions do not bite)."""
    import os
    import shutil

    if shutil.which("mount") is None or os.geteuid() != 0:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("the storage-safety tests need root and mount (CI runs as root)")
        pytest.skip("needs root to mount a tmpfs")
    point = tmp_path / "mnt"
    point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(point)], check=True)
    yield point
    subprocess.run(["umount", "-l", str(point)], check=True)


def _finished_study(folder, tiny_npz, storage_url: str) -> dict:
    done = autodl(folder, *tune_args(f"npz:{tiny_npz}", "--study", "s", "--storage",
                                     storage_url, trials=2))
    assert done.returncode == 0, done.stderr
    rdb = optuna.storages.RDBStorage(storage_url)
    try:
        return {t.number: (t.state, t.value, t.params)
                for t in optuna.load_study(study_name="s", storage=rdb).trials}
    finally:
        rdb.engine.dispose()  # no open file: the folder can be remounted read-only


def _one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("autodl")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_a_full_disk_stops_with_one_line_and_keeps_the_finished_trials(
        mount_point, tmp_path, tiny_npz):
    import shutil

    before = _finished_study(tmp_path, tiny_npz, f"sqlite:///{mount_point}/s.db")
    # Fill the disk but for a little room, so the next trials' writes run out of it.
    with open(mount_point / "filler", "wb") as filler:
        try:
            while True:
                filler.write(b"\0" * 65536)
                filler.flush()
        except OSError:
            pass
    (mount_point / "filler").unlink()
    with open(mount_point / "filler", "wb") as filler:
        filler.write(b"\0" * (shutil.disk_usage(mount_point).free - 96 * 1024))
    result = autodl(tmp_path, *tune_args(f"npz:{tiny_npz}", "--study", "s", "--storage",
                                         f"sqlite:///{mount_point}/s.db", trials=20))
    line = _one_line_error(result)
    assert "disk is full" in line or "No space left" in line, line
    # Every finished trial is still there, unchanged, once there is room again.
    (mount_point / "filler").unlink()
    trials = optuna.load_study(study_name="s", storage=f"sqlite:///{mount_point}/s.db").trials
    assert {t.number: (t.state, t.value, t.params) for t in trials[:2]} == before


def test_a_read_only_folder_is_refused_and_left_unchanged(mount_point, tmp_path, tiny_npz):
    _finished_study(tmp_path, tiny_npz, f"sqlite:///{mount_point}/s.db")
    files = {p.name: _digest(p) for p in mount_point.rglob("*") if p.is_file()}
    subprocess.run(["mount", "-o", "remount,ro", str(mount_point)], check=True)
    for url in (f"sqlite:///{mount_point}/s.db", f"sqlite:///{mount_point}/new.db"):
        result = autodl(tmp_path, *tune_args(f"npz:{tiny_npz}", "--study", "s", "--storage",
                                             url, trials=4))
        assert f"the folder {mount_point} is read-only" in _one_line_error(result)
    assert {p.name: _digest(p) for p in mount_point.rglob("*") if p.is_file()} == files


def test_of_trials_tied_in_accuracy_the_best_is_the_one_of_lowest_validation_loss():
    study = optuna.create_study(direction="maximize")
    add_completed_trial(study, [0.98], 0.05)
    add_completed_trial(study, [0.97], 0.01)  # less accurate: not the best, whatever its loss
    add_completed_trial(study, [0.98], 0.03)
    add_completed_trial(study, [0.98], 0.03)  # the same loss: the earlier one is the best
    add_completed_trial(study, [0.98], None)  # no validation loss logged: after the others
    assert study.best_trial.number == 0  # Optuna's: the first to finish
    assert storage.most_accurate_trial(study).number == 2
    assert storage.best_trial(study, "show").number == 2
    assert storage.validation_loss(study.trials[2]) == 0.03  # its best epoch's, not its least


def test_a_foreign_study_minimizing_its_value_keeps_its_direction():
    study = optuna.create_study(direction="minimize")
    add_completed_trial(study, [0.5], 0.05)
    add_completed_trial(study, [0.2], 0.04)
    add_completed_trial(study, [0.2], 0.01)
    assert storage.most_accurate_trial(study).number == 2


def test_the_pareto_front_lists_trials_tied_in_accuracy_by_validation_loss():
    study = optuna.create_study(directions=["maximize", "minimize"])
    add_completed_trial(study, [0.98, 2.0], 0.05)
    add_completed_trial(study, [0.98, 2.0], 0.03)
    add_completed_trial(study, [0.90, 1.0], 0.01)
    add_completed_trial(study, [0.80, 3.0], 0.01)  # dominated
    assert [t.number for t in storage.pareto_front(study)] == [1, 0, 2]
    assert storage.most_accurate_trial(study).number == 1
