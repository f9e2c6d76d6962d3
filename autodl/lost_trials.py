"""Lost trials: run again from their checkpoint, or given up.

A trial is lost when the process running it is: killed (``kill -9``, the out-of-memory
killer), preempted, crashed, or stopped by Ctrl-C. It is marked FAIL, by its
supervisor or by Optuna's heartbeat check, and its retry is a new trial with the same
parameters (Optuna's ``RetryHeartbeatStaleTrialCallback``), marked with the series it
continues (``TrialAttr.RESUMES``): the trial runner resumes it from the series'
checkpoint (:mod:`autodl.checkpoint`).
"""

from __future__ import annotations

import copy

import optuna
from optuna.trial import FrozenTrial, TrialState

from autodl.checkpoint import CheckpointStore
from autodl.runtime import process_gone
from autodl.storage import FailKind, TrialAttr, fail_lost_trial


def series_of(trial: FrozenTrial) -> int:
    """The number of the first trial of the trial's series (its own, if not a retry)."""
    return trial.user_attrs.get(TrialAttr.RESUMES, trial.number)


class LostTrials:
    """Decides what becomes of a lost trial; usable as Optuna's heartbeat callback.

    A lost trial runs again, except a retry that was lost again without training an
    epoch past where it resumed: a trial that kills its process at the same point every
    time does not run forever. A trial interrupted by Ctrl-C always runs again (once the
    next run starts: :meth:`take_up`).

    Args:
        checkpoints: The study's checkpoints.
    """

    def __init__(self, checkpoints: CheckpointStore) -> None:
        self.checkpoints = checkpoints
        # No limit of Optuna's: the limit is the rule above.
        self._retry = optuna.storages.RetryHeartbeatStaleTrialCallback()

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Retry a lost trial (marked FAIL), or give it up and remove its checkpoint."""
        series, reached = series_of(trial), self.checkpoints.epoch(series_of(trial))
        first_loss = TrialAttr.RESUMES not in trial.user_attrs
        interrupted = trial.user_attrs.get(TrialAttr.FAIL_KIND) == FailKind.INTERRUPTED
        if first_loss or interrupted or reached > trial.user_attrs.get(
                TrialAttr.RESUMED_FROM_EPOCH, 0):
            retry = copy.deepcopy(trial)  # Optuna's callback extends its retry history
            # Not the lost run's records: its failure, history. Where it will resume is
            # noted now, so that a retry lost before it starts counts as no progress.
            retry.user_attrs = {TrialAttr.RESUMES: series, TrialAttr.RESUMED_FROM_EPOCH: reached}
            self._retry(study, retry)
        else:
            self.give_up(trial)

    def give_up(self, trial: FrozenTrial) -> None:
        """The trial will not run again: its checkpoint goes."""
        self.checkpoints.delete(series_of(trial))

    def take_up(self, study: optuna.Study,
                study_storage: optuna.storages.BaseStorage) -> list[FrozenTrial]:
        """At a run's start: retry the trials lost before it, and remove dead checkpoints.

        Lost before it are the trials Ctrl-C stopped, and the trials still RUNNING whose
        process on this machine is gone (``kill -9``, a restarted machine): those need
        not wait for their heartbeat to go stale. A checkpoint is dead when the last trial
        of its series neither runs, nor waits to run, nor was interrupted.

        Returns:
            The trials it found running without their process, now failed.
        """
        failed = []
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            process = trial.user_attrs.get(TrialAttr.PROCESS)
            if process and process_gone(process):
                pid = process.rsplit(":", 2)[1]
                lost, failed_here = fail_lost_trial(
                    study_storage, study, trial.number, FailKind.CRASHED,
                    f"its process ({pid}) is gone: killed, or the machine restarted")
                if failed_here:
                    self(study, lost)
                    failed.append(lost)
        last: dict[int, FrozenTrial] = {}
        for trial in study.get_trials(deepcopy=False):
            last[series_of(trial)] = trial  # trials come in order of their numbers
        alive = set()
        for series, trial in last.items():
            if (trial.state == TrialState.FAIL
                    and trial.user_attrs.get(TrialAttr.FAIL_KIND) == FailKind.INTERRUPTED):
                self(study, trial)
                alive.add(series)
            elif trial.state in (TrialState.RUNNING, TrialState.WAITING):
                alive.add(series)
        for series in self.checkpoints.series():
            if series not in alive:
                self.checkpoints.delete(series)
        return failed
