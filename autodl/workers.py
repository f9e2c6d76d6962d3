"""Worker processes: every trial runs in one, supervised by the tuning process.

TensorFlow keeps what it traced for every trial until its process ends, and a crash in
native code (a segfault, the out-of-memory killer) ends the process. So trials run in
child processes, spawned rather than forked (a forked TensorFlow runtime is unusable),
and the tuning process supervises them without training itself. It:

- starts ``--workers`` workers, each with an even share of the CPU threads or its own
  GPU, and prints their progress;
- replaces a worker between trials, never during one, after ``--trials-per-worker``
  trials or once its resident memory passes ``--worker-memory``: a new process is the
  only way to get TensorFlow's memory back, a GPU's included;
- when a worker dies mid-trial, has that trial failed at once with the cause in words
  (and retried, as the orchestrator decides), and starts another worker; a trial running past
  ``--trial-timeout`` has its worker killed and is failed;
- on Ctrl-C, interrupts the running trials and leaves no worker behind.

What a lost trial means for the study is the orchestrator's business, told through
:class:`Supervision`: this module knows processes, not studies.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import queue
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from autodl._imports import native_stderr_hidden
from autodl.config import TuneConfig
from autodl.errors import AutodlError
from autodl.runtime import gpu_count, setup_devices, share_machine
from autodl.storage import FailKind

#: Seconds a worker interrupted by Ctrl-C gets to record its trial before it is killed.
INTERRUPT_GRACE = 15.0
#: Workers in a row that die before starting a trial: something is wrong with every one
#: (an import, the data), so the supervisor stops instead of starting more.
STARTUP_FAILURES = 3


class Supervision(Protocol):
    """What the supervisor tells the orchestrator, and asks it."""

    def epoch_end(self, trial_number: int, epoch: int, record: dict[str, float]) -> None:
        """A worker's trial finished an epoch."""

    def trial_started(self, trial_number: int) -> None:
        """A worker started a trial."""

    def trial_resumed(self, trial_number: int, series: int, epoch: int) -> None:
        """A worker's trial continues a lost one's checkpoint."""

    def warning(self, text: str) -> None:
        """A worker worked around a problem (one line)."""

    def trial_finished(self, result: Any, best: Any) -> None:
        """A worker's trial ended (complete, pruned or failed by an exception)."""

    def trial_lost(self, trial_number: int, kind: str, reason: str, retry: bool) -> None:
        """A trial's worker died or was killed: fail the trial, and retry it if ``retry``."""

    def stop_reason(self) -> str | None:
        """Why no more trials should start (e.g. a streak of failures), if so."""


class Quota:
    """What a worker may still do; its trial loop asks :meth:`spent` between trials.

    The worker counts its trials as it reports them (:class:`_QueueListener`).

    Args:
        trials: Trials after which the worker is replaced.
        memory: Resident bytes past which the worker is replaced (``None``: no limit).
        stop: Set by the supervisor when no more trials should start.
        judged: Released by the supervisor once it has judged a trial this worker reported.
    """

    def __init__(self, trials: int, memory: int | None, stop: Any, judged: Any) -> None:
        self.trials = trials
        self.memory = memory
        self.stop = stop
        self.judged = judged
        self.done = 0
        self.seen_judged = 0
        self.recycle = False

    def trial_done(self) -> None:
        """Count a finished trial."""
        self.done += 1

    def spent(self) -> bool:
        """Whether the worker must start no more trials (due for replacement, or told to)."""
        # The supervisor judges each finished trial (a streak of failures ends the run)
        # before the next may start; without the wait, one more would start after the end.
        while self.seen_judged < self.done:
            self.judged.acquire()
            self.seen_judged += 1
        if self.stop.is_set():
            return True
        # Memory is judged after a trial: a limit below a fresh worker's own size then
        # means one trial per worker, not workers that never start one.
        self.recycle = self.done >= self.trials or (
            self.done > 0 and self.memory is not None and resident_bytes() > self.memory)
        return self.recycle


#: A worker's share of the study: ``work(config, listener, spent, started)`` runs
#: trials until the study is complete or ``spent()`` says stop (asked between trials), and
#: returns why it stopped early, if it did; ``started`` is the run's start
#: (``time.time()``), where ``--budget`` and ``--timeout`` count from. It must be a
#: module-level function (it is pickled by name).
Work = Callable[[TuneConfig, Any, Callable[[], bool], float], "str | None"]


def resident_bytes() -> int:
    """This process's resident memory now (Linux); elsewhere its peak."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024  # bytes there, KiB here


class _QueueListener:
    """Forwards a worker's progress to the supervisor."""

    def __init__(self, events: Any, worker: int, quota: Quota) -> None:
        self.events = events
        self.worker = worker
        self.quota = quota

    def trial_started(self, trial_number: int) -> None:
        self.events.put(("started", self.worker, trial_number))

    def epoch_end(self, trial_number: int, epoch: int, record: dict[str, float]) -> None:
        self.events.put(("epoch", self.worker, (trial_number, epoch, record)))

    def trial_resumed(self, trial_number: int, series: int, epoch: int) -> None:
        self.events.put(("resumed", self.worker, (trial_number, series, epoch)))

    def warning(self, text: str) -> None:
        self.events.put(("warning", self.worker, text))

    def trial_finished(self, result: Any, best: Any) -> None:
        self.quota.trial_done()
        self.events.put(("trial", self.worker, (result, best)))


def _interrupted(signum: int, frame: Any) -> None:
    # A second Ctrl-C (the terminal's and the supervisor's) must not cut short the
    # recording of the trial the first one interrupted.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def _end_with_supervisor() -> None:
    """End this worker the moment its supervisor is gone (killed with -9, a lost machine).

    Nobody would relay its progress or count its trials any more; its trial stays
    RUNNING, as the supervisor's own did before, until a heartbeat check fails and
    retries it.
    """
    multiprocessing.parent_process().join()
    os.kill(os.getpid(), signal.SIGKILL)


def _work(work_name: tuple[str, str], config: TuneConfig, worker: int, gpus: int,
          events: Any, quota: Quota, started: float) -> None:
    """A worker process's body. It starts with Ctrl-C ignored (see :class:`_Worker`).

    ``work_name`` (module, name) is imported here rather than pickled: its module imports
    TensorFlow, whose start-up lines must be hidden, as the tuning process hides them.
    """
    threading.Thread(target=_end_with_supervisor, daemon=True).start()
    signal.signal(signal.SIGINT, _interrupted)
    try:
        with native_stderr_hidden():
            work = getattr(importlib.import_module(work_name[0]), work_name[1])
            share_machine(config.workers, worker, gpus)
            setup_devices()
        listener = _QueueListener(events, worker, quota)
        reason = work(config, listener, quota.spent, started)
    except KeyboardInterrupt:  # its trial is already marked FAIL, "interrupted"
        return
    except AutodlError as error:  # the storage became unwritable: the run cannot go on
        events.put(("error", worker, str(error)))
        return
    events.put(("exit", worker, (quota.recycle, reason)))


def exit_cause(exitcode: int) -> str:
    """How a worker process ended (``Process.exitcode``), in words."""
    if exitcode == -signal.SIGKILL:  # what the kernel's out-of-memory killer sends
        return "worker killed by SIGKILL: out of memory?"
    if exitcode < 0:
        return f"worker crashed: {signal.Signals(-exitcode).name}"
    return f"worker exited with code {exitcode}"


@dataclass
class _Worker:
    """One worker slot: its current process and the trial it is running."""

    number: int
    process: Any = None
    trial: int | None = None
    trial_since: float = 0.0
    exit: tuple[bool, str | None] | None = None  # (recycle, reason) as the worker said
    judged: Any = None  # the process's Quota.judged

    def start(self, context: Any, args: tuple) -> None:
        self.trial, self.exit = None, None
        self.process = context.Process(target=_work, args=args, daemon=True,
                                       name=f"autodl-worker-{self.number}")
        # The worker inherits Ctrl-C ignored, so that one pressed while it starts (TensorFlow's
        # import takes seconds) prints no traceback; it handles Ctrl-C once it can.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            self.process.start()
        finally:
            signal.signal(signal.SIGINT, previous)

    def kill(self) -> None:
        self.process.kill()
        self.process.join()


class _Supervisor:
    """Starts, watches and replaces the workers of one run (see the module's docstring)."""

    def __init__(self, work: Work, config: TuneConfig, supervision: Supervision,
                 started: float) -> None:
        self.work_name = (work.__module__, work.__qualname__)
        self.config = config
        self.supervision = supervision
        self.started = started
        self.context = multiprocessing.get_context("spawn")
        self.events = self.context.Queue()
        self.stop = self.context.Event()
        self.gpus = gpu_count()
        self.memory = config.worker_memory_bytes
        self.workers = [_Worker(number) for number in range(config.workers)]
        self.reasons: list[str] = []
        self.errors: list[str] = []  # from workers that could not go on
        self.startup_failures = 0

    def _start(self, worker: _Worker) -> None:
        worker.judged = self.context.Semaphore(0)
        quota = Quota(self.config.trials_per_worker, self.memory, self.stop, worker.judged)
        worker.start(self.context, (self.work_name, self.config, worker.number, self.gpus,
                                    self.events, quota, self.started))

    def run(self) -> str | None:
        for worker in self.workers:
            self._start(worker)
        try:
            while any(worker.process for worker in self.workers):
                ended = [w for w in self.workers if w.process and not w.process.is_alive()]
                self._relay(timeout=0.2)
                for worker in ended:
                    self._ended(worker)
                self._check_timeouts()
                if self.supervision.stop_reason():
                    self.stop.set()
        except KeyboardInterrupt:
            self._interrupt()
            raise
        finally:
            for worker in self.workers:  # after an error of the supervisor's own
                if worker.process and worker.process.is_alive():
                    worker.kill()
        if self.errors:
            raise AutodlError(self.errors[0])
        return "; ".join(dict.fromkeys(self.reasons)) or None

    def _relay(self, timeout: float) -> None:
        """Pass on the workers' events: the first within ``timeout``, then all waiting."""
        try:
            event = self.events.get(timeout=timeout)
            while True:
                self._handle(*event)
                event = self.events.get_nowait()
        except queue.Empty:
            pass

    def _handle(self, kind: str, number: int, payload: Any) -> None:
        worker = self.workers[number]
        if kind == "started":
            worker.trial, worker.trial_since = payload, time.monotonic()
            self.startup_failures = 0
            self.supervision.trial_started(payload)
        elif kind == "epoch":
            self.supervision.epoch_end(*payload)
        elif kind == "resumed":
            self.supervision.trial_resumed(*payload)
        elif kind == "warning":
            self.supervision.warning(payload)
        elif kind == "trial":
            worker.trial = None
            self.supervision.trial_finished(*payload)
            if self.supervision.stop_reason():
                self.stop.set()
            worker.judged.release()
        elif kind == "error":
            self.errors.append(payload)
            self.stop.set()
            worker.exit = (False, None)
        else:
            worker.exit = payload

    def _ended(self, worker: _Worker) -> None:
        """A worker's process ended: replace it, or let its slot close."""
        worker.process.join()
        exitcode, said = worker.process.exitcode, worker.exit
        worker.process = None
        if exitcode == 0 and said is not None:
            recycle, reason = said
            if reason:
                self.reasons.append(reason)
            if recycle:
                self._replace(worker)
            return
        cause = exit_cause(exitcode)
        if worker.trial is not None:
            self.supervision.trial_lost(worker.trial, FailKind.CRASHED, cause, retry=True)
        else:
            self.startup_failures += 1
            if self.startup_failures >= STARTUP_FAILURES:
                self.reasons.append(f"{STARTUP_FAILURES} workers in a row ended before "
                                    f"starting a trial; the last: {cause}")
                self.stop.set()
        self._replace(worker)

    def _replace(self, worker: _Worker) -> None:
        """Start a new process in the worker's slot, unless no more trials should start."""
        worker.process = None
        if not self.stop.is_set() and not self.supervision.stop_reason():
            self._start(worker)

    def _check_timeouts(self) -> None:
        limit = self.config.trial_timeout
        if limit is None:
            return
        for worker in self.workers:
            if (worker.process and worker.trial is not None
                    and time.monotonic() - worker.trial_since > limit):
                worker.kill()
                self._relay(timeout=0)  # what it sent before it was killed
                if worker.trial is not None:  # unless it finished just in time
                    self.supervision.trial_lost(worker.trial, FailKind.TIMEOUT,
                                                f"timed out after {limit:g} s", retry=False)
                self._replace(worker)

    def _interrupt(self) -> None:
        """Ctrl-C: let each running trial record itself as interrupted, then end every worker.

        The terminal sends Ctrl-C to the workers too; a ``kill -INT`` of this process
        alone reaches only it, so the workers are told here as well.
        """
        self.stop.set()
        self._relay(timeout=0)  # a trial that started just now
        running = [worker for worker in self.workers if worker.process is not None]
        for worker in running:
            if worker.trial is None:  # starting or between trials: nothing to record
                worker.kill()
            elif worker.process.is_alive():
                os.kill(worker.process.pid, signal.SIGINT)
        deadline = time.monotonic() + INTERRUPT_GRACE
        try:
            while (time.monotonic() < deadline
                   and any(worker.process.is_alive() for worker in running)):
                self._relay(timeout=0.1)  # each interrupted trial's line
            self._relay(timeout=0)
        except KeyboardInterrupt:  # pressed again: do not wait
            pass
        for worker in running:
            if worker.process.is_alive():
                worker.kill()
            if worker.trial is not None:
                self.supervision.trial_lost(worker.trial, FailKind.INTERRUPTED,
                                            "stopped by the user", retry=False)
            worker.process = None


def run_in_workers(work: Work, config: TuneConfig, supervision: Supervision,
                   started: float) -> str | None:
    """Run the study's trials in ``config.workers`` supervised worker processes.

    Args:
        work: What each worker runs (the orchestrator's trial loop).
        config: The study's validated configuration.
        supervision: Told about every worker's progress and every lost trial.
        started: When the run began (``time.time()``).

    Returns:
        Why workers stopped before the study was complete, if any did.

    Raises:
        AutodlError: If a worker could not go on (the storage became unwritable).
        KeyboardInterrupt: On Ctrl-C, once every worker has ended.
    """
    return _Supervisor(work, config, supervision, started).run()
