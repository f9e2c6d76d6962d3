"""Supervised worker processes: recycling, a worker that dies mid-trial, --trial-timeout."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

import optuna
import pytest
from conftest import children_of, tune_args, write_plugin

from autodl.cli import main
from autodl.config import load_config
from autodl.errors import AutodlError
from autodl.workers import Quota, Workers, exit_cause

STORAGE = "sqlite:///studies/autodl.db"

#: A plugin that does ``{action}`` while building, in a worker process, once: the first
#: build after the test arms it with the file ``armed`` (the parent's dry build is spared).
#: Every build in a worker appends the worker's process id to ``builds.txt``.
PLUGIN = '''
import ctypes, multiprocessing, os, signal, time
from pathlib import Path

import keras


def build(hp, input_shape, num_classes):
    units = hp.Int("units", 4, 16)
    if multiprocessing.parent_process() is not None:
        with open("builds.txt", "a") as builds:
            builds.write(f"{{os.getpid()}}\\n")
        armed = Path("armed")
        if armed.exists():
            armed.unlink()
            {action}
    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(units, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))
'''


def plugin(folder: Path, action: str = "pass", armed: bool = False) -> Path:
    return write_plugin(folder, PLUGIN, action, armed)


def tune(folder: Path, dataset: Path, trials: int, *extra: str) -> int:
    return main(tune_args(f"npz:{dataset}", "--arch", str(folder / "plugin.py"),
                          "--study", "s", "--epochs", "1", *extra, trials=trials))


def trials() -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="s", storage=STORAGE).get_trials()


def builds_per_process(folder: Path) -> list[int]:
    pids = (folder / "builds.txt").read_text().split()
    return [pids.count(pid) for pid in dict.fromkeys(pids)]


def assert_no_worker_left() -> None:
    assert multiprocessing.active_children() == []
    # In the process table: the workers were the children of the fork server, which
    # outlives a run in this process.
    servers = [pid for pid in children_of(os.getpid())
               if b"multiprocessing.forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert servers
    assert [pid for server in servers for pid in children_of(server)] == []


@pytest.mark.parametrize(("action", "reason"), [
    ("os.kill(os.getpid(), signal.SIGKILL)", "worker killed by SIGKILL: out of memory?"),
    ("ctypes.string_at(0)", "worker crashed: SIGSEGV"),
])
def test_a_worker_that_dies_mid_trial_fails_that_trial_only(in_tmp, tiny_npz, capsys,
                                                            action, reason):
    plugin(in_tmp, action, armed=True)
    assert tune(in_tmp, tiny_npz, 2) == 0
    died, retry, *rest = trials()
    assert died.state.name == "FAIL"
    assert died.user_attrs["fail_reason"] == f"crashed: {reason}"
    # Its parameters are tried once more, as a heartbeat-stale trial's are.
    assert retry.system_attrs["failed_trial"] == died.number
    assert retry.params == died.params and retry.state.name == "COMPLETE"
    assert [t.state.name for t in trials()].count("RUNNING") == 0
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials()) == 2
    out = capsys.readouterr().out
    assert "trial    0 FAIL" in out and reason in out
    assert "2 of 2 trials finished" in out
    assert_no_worker_left()


def test_a_trial_past_its_timeout_is_failed_and_the_study_goes_on(in_tmp, tiny_npz, capsys):
    plugin(in_tmp, "time.sleep(600)", armed=True)
    # No pruner: the two trials after the one that times out train to the end.
    assert tune(in_tmp, tiny_npz, 2, "--trial-timeout", "5", "--pruner", "none") == 0
    states = [(t.state.name, t.user_attrs.get("fail_reason")) for t in trials()]
    # Not retried: the same values would most likely run as long again.
    assert states == [("FAIL", "timeout: timed out after 5 s"), ("COMPLETE", None),
                      ("COMPLETE", None)]
    assert "timed out after 5 s" in capsys.readouterr().out
    assert_no_worker_left()


def test_workers_are_replaced_after_their_trials_and_their_memory(in_tmp, tiny_npz):
    plugin(in_tmp)
    assert tune(in_tmp, tiny_npz, 4, "--trials-per-worker", "2") == 0
    assert builds_per_process(in_tmp) == [2, 2]
    (in_tmp / "builds.txt").unlink()
    assert tune(in_tmp, tiny_npz, 6, "--worker-memory", "1MiB") == 0  # every one passes it
    assert builds_per_process(in_tmp) == [1, 1]


def test_recycling_gives_the_same_trials_as_one_worker_process(in_tmp, tiny_npz):
    def study(name: str, *extra: str) -> list[tuple]:
        assert main(tune_args(f"npz:{tiny_npz}", "--study", name, *extra, trials=5)) == 0
        return [(t.state.name, t.params, t.value) for t in
                optuna.load_study(study_name=name, storage=STORAGE).trials]

    assert study("recycled", "--trials-per-worker", "2") == study("one")


def test_two_workers_share_one_sqlite_study_without_locking_failures(in_tmp, tiny_npz, capsys):
    args = tune_args(f"npz:{tiny_npz}", "--study", "w", "--workers", "2", trials=6)
    assert main(args) == 0
    study = optuna.load_study(study_name="w", storage=STORAGE)
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
    # Each trial's sampler is seeded by its number: the workers did not repeat each other.
    params = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(params)) == len(params)
    assert_no_worker_left()


def test_workers_0_runs_the_trials_in_this_process(in_tmp, tiny_npz):
    plugin(in_tmp)
    assert tune(in_tmp, tiny_npz, 2, "--workers", "0") == 0
    assert not (in_tmp / "builds.txt").exists()  # no build ran in a worker process
    assert [t.state.name in ("COMPLETE", "PRUNED") for t in trials()] == [True, True]


@pytest.mark.parametrize(("options", "message"), [
    ({"worker_memory": "6XB"}, "--worker-memory needs a size like 6GiB or 500MB, got '6XB'"),
    ({"worker_memory": "0GiB"}, "--worker-memory must be more than zero"),
    ({"trial_timeout": 0}, "--trial-timeout must be a positive number of seconds, got 0"),
    ({"trials_per_worker": 0}, "--trials-per-worker must be at least 1, got 0"),
    ({"workers": -1}, "--workers must be 0 (no worker process) or more, got -1"),
])
def test_bad_worker_options_are_refused(options, message):
    with pytest.raises(AutodlError) as refused:
        load_config({"arch": "mlp", **options})
    assert str(refused.value).startswith(message)


@pytest.mark.parametrize(("text", "size"), [
    ("6GiB", 6 * 2**30), ("6G", 6 * 2**30), ("500MB", 500 * 10**6), ("1.5 TiB", 3 * 2**39),
    ("512k", 2**19), ("100b", 100),
])
def test_worker_memory_sizes(text, size):
    assert load_config({"arch": "mlp", "worker_memory": text}).worker_memory_bytes == size


def test_the_default_worker_memory_is_half_the_machine_shared_by_the_workers():
    from autodl.config import machine_memory

    config = load_config({"arch": "mlp", "workers": 2})
    assert config.worker_memory_bytes == machine_memory() // 4


def judged_quota(trials: int, memory: int | None, stop) -> Quota:
    """A quota whose every reported trial the supervisor has already judged."""
    judged = threading.Semaphore(100)
    return Quota(trials=trials, memory=memory, stop=stop, judged=judged)


def test_a_worker_is_due_for_replacement_after_its_trials_or_past_its_memory():
    stop = threading.Event()
    quota = judged_quota(trials=2, memory=None, stop=stop)
    quota.trial_done()
    assert not quota.spent()
    quota.trial_done()
    assert quota.spent() and quota.recycle
    past_memory = judged_quota(trials=5, memory=1, stop=stop)  # any process has more than a byte
    assert not past_memory.spent()  # judged after a trial, not before the first
    past_memory.trial_done()
    assert past_memory.spent()
    stop.set()
    told = judged_quota(trials=5, memory=None, stop=stop)
    assert told.spent() and not told.recycle  # told to stop: not replaced


def test_a_worker_starts_no_trial_before_the_supervisor_judged_its_last():
    stop, judged = threading.Event(), threading.Semaphore(0)
    quota = Quota(trials=5, memory=None, stop=stop, judged=judged)
    quota.trial_done()
    answer = []
    asking = threading.Thread(target=lambda: answer.append(quota.spent()))
    asking.start()
    asking.join(timeout=0.5)
    assert asking.is_alive() and not answer  # waits for the judgment
    stop.set()  # the trial ended a streak of failures
    judged.release()
    asking.join(timeout=5)
    assert answer == [True]


@pytest.mark.parametrize(("exitcode", "cause"), [
    (-signal.SIGKILL, "worker killed by SIGKILL: out of memory?"),
    (-signal.SIGSEGV, "worker crashed: SIGSEGV"),
    (-signal.SIGABRT, "worker crashed: SIGABRT"),
    (3, "worker exited with code 3"),
])
def test_exit_causes_are_said_in_words(exitcode, cause):
    assert exit_cause(exitcode) == cause


def pretend_work(config, listener, spent, started, ready) -> None:
    """A worker's trial loop without a study: trials of 0.4 s, reported as (pid, start, end)."""
    ready()
    while not spent():
        listener.trial_started(0)
        start = time.time()
        time.sleep(0.4)
        listener.trial_finished((os.getpid(), start, time.time()), None)


class CountingSupervision:
    """A study that needs ``trials`` trials, told of each one's end."""

    def __init__(self, trials: int) -> None:
        self.trials = trials
        self.started = 0
        self.finished: list[tuple[int, float, float]] = []

    def trial_started(self, trial_number):
        self.started += 1

    def trial_finished(self, result, best):
        self.finished.append(result)

    def trial_lost(self, trial_number, kind, reason, retry):
        raise AssertionError(f"trial lost: {reason}")

    def stop_reason(self):
        return "complete" if len(self.finished) >= self.trials else None

    def trials_to_start(self):
        return self.trials - self.started

    def epoch_end(self, *args): ...

    def trial_resumed(self, *args): ...

    def warning(self, text): ...


def test_a_worker_due_for_replacement_hands_over_to_a_successor_already_waiting():
    # 40 trials of 0.4 s outlast a worker's start-up (TensorFlow's import, in share_machine)
    config = load_config({"arch": "mlp", "trials_per_worker": 40})
    supervision = CountingSupervision(trials=42)
    with Workers(config, work="test_workers:pretend_work") as workers:
        assert workers.run(supervision, time.time()) is None
    pids = [pid for pid, _, _ in supervision.finished]
    first, second = dict.fromkeys(pids)
    assert pids == [first] * 40 + [second] * 2  # and no third: the study needed none
    handover = supervision.finished[40][1] - supervision.finished[39][2]
    # Never two trials at once in one slot; no wait for a start-up (seconds).
    assert 0 <= handover < 1.0
    assert_no_worker_left()


def test_workers_started_beside_a_check_that_fails_are_ended(in_tmp, capsys):
    # The workers start with the command, before its input is checked.
    assert main(["tune", "--arch", "mlp", "--dataset", "npz:missing.npz", "--trials", "1"]) == 2
    assert "missing.npz" in capsys.readouterr().err
    assert_no_worker_left()
    assert not (in_tmp / "studies").exists()
