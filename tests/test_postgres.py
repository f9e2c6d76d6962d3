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
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

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
