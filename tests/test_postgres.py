"""Many workers on one study in a real PostgreSQL server, as on many machines.

A throw-away cluster (``initdb`` + ``pg_ctl``) is started on a free port under a temp
folder and stopped afterwards. Without PostgreSQL's server programs the tests skip
locally, and fail under CI (``CI=true``), whose ``.ci/run`` installs them.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import optuna
import pytest
from conftest import make_images

from autodl.storage import most_accurate_trial

STUDY = "shared"
TRIALS = 9
WORKERS = 3


def _missing(reason: str) -> None:
    """Skip locally; under CI a missing server is a failure, never a skip."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI must run the PostgreSQL tests: .ci/run installs it)")
    pytest.skip(reason)


def _server_bin() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``: on PATH, else Debian's versioned ones."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                         key=lambda p: int(Path(p).parent.name), reverse=True):
        if all(os.access(Path(folder) / name, os.X_OK) for name in ("initdb", "pg_ctl")):
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL cluster on 127.0.0.1 and a free port: its database's URL."""
    bin_dir = _server_bin()
    if bin_dir is None:
        _missing("PostgreSQL server programs (initdb, pg_ctl) not found")

    # initdb refuses to run as root: the server runs as an unprivileged user then.
    as_user: list[str] = []
    if os.geteuid() == 0:
        name = "postgres"
        try:
            pwd.getpwnam(name)
        except KeyError:
            name = "nobody"
        as_user = ["runuser", "-u", name, "--"]
    root = Path(tempfile.mkdtemp(prefix="autodl-pg-"))
    data, log = root / "data", root / "server.log"
    if as_user:
        user = pwd.getpwnam(as_user[2])
        os.chown(root, user.pw_uid, user.pw_gid)

    def run(*command: str, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run([*as_user, *command], capture_output=True, text=True,
                              timeout=120, **kwargs)

    def server_log() -> str:
        return log.read_text()[-3000:] if log.exists() else "(no server log)"

    started, port = False, 0
    try:
        made = run(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                   "--encoding=UTF8", "--locale=C", "--no-sync")
        assert made.returncode == 0, made.stdout + made.stderr
        for _ in range(3):  # the free port may be taken in between: try another
            port = _free_port()
            options = (f"-c listen_addresses=127.0.0.1 -p {port} -k {root} "
                       "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
            start = run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options,
                        "-w", "-t", "60", "start")
            if start.returncode == 0:
                started = True
                break
        assert started, start.stdout + start.stderr + server_log()
        created = run(str(bin_dir / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                      "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c", "CREATE DATABASE autodl")
        assert created.returncode == 0, created.stdout + created.stderr
        yield f"postgresql://postgres@127.0.0.1:{port}/autodl"
    finally:
        try:
            if started:
                stop = run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
                assert stop.returncode == 0, stop.stdout + stop.stderr + server_log()
                assert not _port_open(port), f"port {port} still open after pg_ctl stop"
        finally:
            shutil.rmtree(root, ignore_errors=True)


def _tune(folder: Path, dataset: Path, url: str, seed: int) -> subprocess.Popen:
    args = ["tune", "--arch", "mlp", "--dataset", f"npz:{dataset}", "--trials", str(TRIALS),
            "--epochs", "2", "--storage", url, "--study", STUDY, "--seed", str(seed)]
    return subprocess.Popen([sys.executable, "-m", "autodl", *args], cwd=folder,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _table(trials: list[optuna.trial.FrozenTrial]) -> str:
    """The trials, one line each, for failure messages."""

    def when(moment) -> str:
        return f"{moment:%H:%M:%S.%f}" if moment else "-"

    return "\n".join(
        f"#{t.number} {t.state.name:<8} value={t.value} "
        f"model={t.user_attrs.get('model_artifact_id')} "
        f"start={when(t.datetime_start)} end={when(t.datetime_complete)}"
        for t in sorted(trials, key=lambda t: t.number)
    )


def test_three_workers_share_one_study_and_stop_at_the_total(postgres_url, tmp_path):
    x, y = make_images(120)
    dataset = tmp_path / "tiny.npz"
    np.savez(dataset, x_train=x, y_train=y)
    # Started together on an empty database, as on three machines: they race to create
    # the tables and the study, then share its trials.
    workers = [_tune(tmp_path, dataset, postgres_url, seed) for seed in range(1, WORKERS + 1)]
    outputs = []
    try:
        for worker in workers:
            outputs.append(worker.communicate(timeout=300))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()
    runs = "\n".join(f"--- worker {i} (exit {w.returncode}) stdout:\n{out}\nstderr:\n{err}"
                     for i, (w, (out, err)) in enumerate(zip(workers, outputs, strict=True)))
    try:
        study = optuna.load_study(study_name=STUDY, storage=postgres_url)
        trials = study.get_trials(deepcopy=False)
    except Exception as error:  # no study: the workers' output says why
        pytest.fail(f"cannot load the study ({error}):\n{runs}")
    report = f"{_table(trials)}\n{runs}"

    # No worker crashed, and each one ended with the summary.
    for worker, (out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, report
        assert "Traceback" not in err, report
        assert f"Study:  {STUDY} in {postgres_url}" in out, report
    # Every trial a worker ran is in the study, with its own number, and none was lost.
    numbers = [trial.number for trial in trials]
    assert sorted(numbers) == list(range(len(trials))), report
    printed = sorted(int(line.split()[1]) for out, _ in outputs for line in out.splitlines()
                     if line.startswith("trial "))
    assert printed == sorted(numbers), report
    states = [trial.state.name for trial in trials]
    assert set(states) <= {"COMPLETE", "PRUNED"}, report
    # --trials is the study-wide total: together the workers stop at exactly that many.
    assert len(trials) == TRIALS, report
    # The study's facts were recorded, and its best model evaluated on the test split.
    assert study.user_attrs["autodl"]["arch"] == "mlp"
    assert study.user_attrs["test"]["trial"] == most_accurate_trial(study).number, report


class _SameLengthTrials:
    """Stands in for the trial runner: every trial takes one second, so workers started
    together also finish their trials together, the moment they decide whether to go on."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __call__(self, trial: optuna.Trial) -> float:
        time.sleep(1.0)
        return trial.suggest_float("x", 0.0, 1.0)


class _Quiet:
    def trial_started(self, trial_number) -> None:
        pass

    def trial_finished(self, result, best) -> None:
        pass


@pytest.fixture(params=["sqlite", "postgresql"])
def lockstep_url(request, in_tmp) -> str:
    """The same race on both kinds of storage workers share."""
    if request.param == "sqlite":
        return "sqlite:///lockstep.db"
    return request.getfixturevalue("postgres_url")


def test_workers_finishing_together_stop_at_the_total(lockstep_url, monkeypatch):
    """Three workers, four trials: after the first three finish at the same moment, only
    one worker may start the fourth."""
    from autodl import tuner
    from autodl.config import TuneConfig
    from autodl.storage import open_storage

    monkeypatch.setattr(tuner, "TrialRunner", _SameLengthTrials)
    config = TuneConfig(arch="mlp", trials=4, storage=lockstep_url, study="lockstep")
    optuna.create_study(study_name="lockstep", storage=open_storage(lockstep_url),
                        direction="maximize")
    studies = [optuna.load_study(study_name="lockstep", storage=open_storage(lockstep_url))
               for _ in range(WORKERS)]
    start = threading.Barrier(WORKERS)

    def worker(study: optuna.Study) -> None:
        start.wait()
        tuner.run_trials(study, None, None, config, _Quiet())

    threads = [threading.Thread(target=worker, args=(study,)) for study in studies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    trials = optuna.load_study(study_name="lockstep", storage=lockstep_url).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * config.trials, _table(trials)


def test_unreachable_server_is_one_line_exit_2(tmp_path):
    port = _free_port()  # nothing listens there
    url = f"postgresql://postgres@127.0.0.1:{port}/autodl"
    result = subprocess.run(
        [sys.executable, "-m", "autodl", "tune", "--arch", "mlp", "--dataset", "digits",
         "--trials", "1", "--storage", url],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"autodl: error: cannot open storage {url}"), result.stderr
    # Refused by the (absent) server, not for a missing database driver.
    assert "Connection refused" in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "studies").exists()
