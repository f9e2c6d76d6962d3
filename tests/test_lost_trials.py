"""Lost trials: retried from their checkpoint while they make progress, or given up."""

from __future__ import annotations

import socket
import subprocess
import sys

import optuna
import pytest
from optuna.distributions import IntDistribution
from optuna.trial import TrialState

from autodl.checkpoint import Checkpoint, CheckpointStore
from autodl.lost_trials import LostTrials
from autodl.runtime import process_identity
from autodl.storage import FailKind, TrialAttr

PARAMS = {"units": 8}
DISTRIBUTIONS = {"units": IntDistribution(4, 16)}


@pytest.fixture
def storage() -> optuna.storages.BaseStorage:
    return optuna.storages.InMemoryStorage()


@pytest.fixture
def study(storage) -> optuna.Study:
    return optuna.create_study(storage=storage, direction="maximize")


@pytest.fixture
def store(tmp_path) -> CheckpointStore:
    return CheckpointStore(tmp_path / "checkpoints")


def checkpoint_at(store: CheckpointStore, series: int, epoch: int) -> None:
    store.save(series, Checkpoint(epoch=epoch, history=[], data_seed=0, model=[], optimizer=[]))


def lost(study: optuna.Study, **user_attrs) -> optuna.trial.FrozenTrial:
    """A trial failed because its process was lost."""
    study.add_trial(optuna.create_trial(state=TrialState.FAIL, params=PARAMS,
                                        distributions=DISTRIBUTIONS, user_attrs=user_attrs))
    return study.trials[-1]


def test_a_first_loss_is_retried_with_its_series_and_clean_records(study, store):
    checkpoint_at(store, 0, 3)
    LostTrials(store)(study, lost(study, fail_reason="crashed: worker killed", history=[{}]))
    retry = study.trials[-1]
    assert retry.state == TrialState.WAITING and retry.params == PARAMS
    # Where it resumes, and nothing of the lost run's failure.
    assert retry.user_attrs == {TrialAttr.RESUMES: 0, TrialAttr.RESUMED_FROM_EPOCH: 3}


def test_a_retry_lost_again_is_retried_only_if_it_trained_further(study, store):
    lost_trials = LostTrials(store)
    lost(study)  # trial 0, the series' first
    checkpoint_at(store, 0, 3)
    # Trial 1 resumed at epoch 3 and reached epoch 5 before it was lost: once more.
    checkpoint_at(store, 0, 5)
    lost_trials(study, lost(study, resumes_trial=0, resumed_from_epoch=3))
    assert study.trials[-1].state == TrialState.WAITING
    assert study.trials[-1].user_attrs[TrialAttr.RESUMED_FROM_EPOCH] == 5
    # Trial 3 resumed at 5 and was lost there again (it kills its process at that point).
    lost_trials(study, lost(study, resumes_trial=0, resumed_from_epoch=5))
    assert study.trials[-1].state == TrialState.FAIL  # not retried
    assert store.series() == []  # and its checkpoint is gone


def test_an_interrupted_retry_runs_again_even_without_progress(study, store):
    checkpoint_at(store, 0, 2)
    lost(study)
    LostTrials(store)(study, lost(study, resumes_trial=0, resumed_from_epoch=2,
                                  fail_kind=FailKind.INTERRUPTED))
    assert study.trials[-1].state == TrialState.WAITING


def test_a_run_requeues_interrupted_trials_and_removes_dead_checkpoints(study, storage, store):
    lost_trials = LostTrials(store)
    lost(study, fail_kind=FailKind.INTERRUPTED)  # 0: stopped by Ctrl-C
    running = study.ask()  # 1: running elsewhere
    lost(study, fail_kind=FailKind.TIMEOUT)  # 2: will not run again
    lost(study, fail_kind=FailKind.INTERRUPTED)  # 3: stopped by Ctrl-C and already requeued
    study.add_trial(optuna.create_trial(state=TrialState.WAITING, params=PARAMS,
                                        distributions=DISTRIBUTIONS,
                                        user_attrs={TrialAttr.RESUMES: 3}))
    for series in (0, 1, 2, 3, 9):
        checkpoint_at(store, series, 1)
    lost_trials.take_up(study, storage)
    requeued = [t for t in study.trials if t.state == TrialState.WAITING]
    assert [t.user_attrs[TrialAttr.RESUMES] for t in requeued] == [3, 0]
    assert store.series() == [0, 1, 3]
    assert running.number == 1
    lost_trials.take_up(study, storage)  # a second run requeues nothing more
    assert len(study.trials) == 6


def test_a_run_retries_at_once_a_running_trial_whose_process_here_is_gone(study, storage,
                                                                         store):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    gone = f"{socket.gethostname()}:{finished.stdout.strip()}:1"
    for process in (gone, process_identity(), "elsewhere:123:456"):
        trial = study.ask()  # RUNNING
        trial.set_user_attr(TrialAttr.PROCESS, process)
    LostTrials(store).take_up(study, storage)
    states = [(t.state.name, t.user_attrs.get(TrialAttr.FAIL_REASON)) for t in study.trials]
    pid = finished.stdout.strip()
    assert states == [
        ("FAIL", f"crashed: its process ({pid}) is gone: killed, or the machine restarted"),
        ("RUNNING", None),  # this process: alive
        ("RUNNING", None),  # another machine's: for its heartbeat to tell
        ("WAITING", None),  # the retry of the first
    ]
