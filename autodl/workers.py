"""Worker processes: several trial runners on one study, one process each.

TensorFlow cannot train several models from threads of one process, so workers are
processes, spawned rather than forked (a forked TensorFlow runtime is unusable). Each
gets an even share of the CPU threads, or its own GPU where there are several, runs
trials on the shared study through the storage alone, and sends its progress to the
parent, which prints it.
"""

from __future__ import annotations

import multiprocessing
import queue
from collections.abc import Callable
from typing import Any

from autodl._imports import native_stderr_hidden
from autodl.config import TuneConfig
from autodl.runtime import gpu_count, setup_devices, share_machine

#: A worker's share of the study: ``work(config, worker, listener)`` returns why it
#: stopped early, if it did. It must be a module-level function (it is pickled by name).
Work = Callable[[TuneConfig, int, Any], "str | None"]


class _QueueListener:
    """Forwards a worker's progress to the parent process."""

    def __init__(self, events: Any) -> None:
        self.events = events

    def epoch_end(self, trial_number: int, epoch: int, record: dict[str, float]) -> None:
        self.events.put(("epoch", (trial_number, epoch, record)))

    def trial_finished(self, result: Any, best: Any) -> None:
        self.events.put(("trial", (result, best)))


def _work(work: Work, config: TuneConfig, worker: int, gpus: int, events: Any) -> None:
    """A worker process's body."""
    share_machine(config.workers, worker, gpus)
    with native_stderr_hidden():
        setup_devices()
    try:
        reason = work(config, worker, _QueueListener(events))
    except KeyboardInterrupt:  # Ctrl-C reaches every worker; its trial is marked FAIL
        return
    if reason:
        events.put(("stopped", f"worker {worker}: {reason}"))


def run_in_workers(work: Work, config: TuneConfig, listener: Any) -> str | None:
    """Run ``config.workers`` worker processes on the study and relay their progress.

    Args:
        work: What each worker runs (the orchestrator's trial loop).
        config: The study's validated configuration.
        listener: Told about every worker's progress.

    Returns:
        Why workers stopped before the study was complete, if any did.
    """
    gpus = gpu_count()
    context = multiprocessing.get_context("spawn")
    events = context.Queue()
    processes = [
        context.Process(target=_work, args=(work, config, worker, gpus, events),
                        name=f"autodl-worker-{worker}")
        for worker in range(config.workers)
    ]
    for process in processes:
        process.start()
    reasons: list[str] = []

    def relay(kind: str, payload: Any) -> None:
        if kind == "epoch":
            listener.epoch_end(*payload)
        elif kind == "trial":
            listener.trial_finished(*payload)
        else:
            reasons.append(payload)

    try:
        while any(process.is_alive() for process in processes):
            try:
                relay(*events.get(timeout=0.5))
            except queue.Empty:
                continue
        while True:  # what the last workers sent before exiting
            try:
                relay(*events.get(timeout=0.1))
            except queue.Empty:
                break
    finally:
        for process in processes:
            process.join()
    reasons += [
        f"worker {worker} exited with code {process.exitcode}"
        for worker, process in enumerate(processes) if process.exitcode
    ]
    return "; ".join(reasons) or None
