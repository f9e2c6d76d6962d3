"""Worker processes: every trial runs in one, supervised by the tuning process.

TensorFlow keeps what it traced for every trial until its process ends, and a crash in
native code (a segfault, the out-of-memory killer) ends the process. So trials run in
child processes, and the tuning process supervises them without training itself. It:

- starts ``--workers`` workers, each with an even share of the CPU threads or its own
  GPU, and prints their progress;
- replaces a worker between trials, never during one, after ``--trials-per-worker``
  trials or once its resident memory passes ``--worker-memory``: a new process is the
  only way to get TensorFlow's memory back, a GPU's included;
- when a worker dies mid-trial, has that trial failed at once with the cause in words
  (and retried, as the orchestrator decides), and starts another worker; a trial running past
  ``--trial-timeout`` has its worker killed and is failed;
- on Ctrl-C, interrupts the running trials and leaves no worker behind.

Starting a worker would take seconds, most of them importing TensorFlow, so workers
are forked from a server process that imported it once (multiprocessing's
``forkserver``, see :mod:`autodl._forkserver`): forked before TensorFlow's runtime or a
GPU starts, each worker starts its own, which a fork of a started runtime could not.
The fork server starts with the command, importing beside the tuning process's own
start-up, and a worker due for replacement after its trials has its successor started
shortly before its last trial ends, set up and waiting.

What a lost trial means for the study is the orchestrator's business, told through
:class:`Supervision`: this module knows processes, not studies.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import multiprocessing
import multiprocessing.forkserver
import os
import queue
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from autodl._imports import native_stderr_hidden
from autodl.config import TuneConfig
from autodl.errors import AutodlError
from autodl.runtime import gpu_count, setup_devices, share_machine
from autodl.storage import FailKind

#: Seconds a worker gets to end by itself (to record the trial Ctrl-C interrupted, or
#: once it has said it starts no more trials) before it is killed.
GRACE = 15.0
#: Workers in a row that die before starting a trial: something is wrong with every one
#: (an import, the data), so the supervisor stops instead of starting more.
STARTUP_FAILURES = 3
#: A successor starts once its predecessor's trials left should take no longer than this
#: many times a worker's start-up (as measured in this run): it then starts beside a
#: training worker, slower than alone.
SUCCESSOR_LEAD = 1.5
#: What workers run: the orchestrator's trial loop, named rather than imported, since its
#: module imports TensorFlow (see :data:`Work`).
WORK = "autodl.tuner:work"


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

    def trials_to_start(self) -> float:
        """How many more trials the study needs started (``math.inf``: until the budget)."""


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


#: A worker's share of the study: ``work(config, listener, spent, started, ready)`` loads
#: the study and its data, calls ``ready()`` (which returns when the worker may start
#: training), then runs trials until the study is complete or ``spent()`` says stop
#: (asked between trials), and returns why it stopped early, if it did; ``started`` is
#: the run's start (``time.time()``), where ``--budget`` and ``--timeout`` count from. It
#: must be a module-level function, named ``"module:function"`` (as :data:`WORK`).
Work = Callable[[TuneConfig, Any, Callable[[], bool], float, Callable[[], None]], "str | None"]


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

    def __init__(self, events: Any, serial: int, quota: Quota) -> None:
        self.events = events
        self.serial = serial
        self.quota = quota

    def trial_started(self, trial_number: int) -> None:
        self.events.put(("started", self.serial, trial_number))

    def epoch_end(self, trial_number: int, epoch: int, record: dict[str, float]) -> None:
        self.events.put(("epoch", self.serial, (trial_number, epoch, record)))

    def trial_resumed(self, trial_number: int, series: int, epoch: int) -> None:
        self.events.put(("resumed", self.serial, (trial_number, series, epoch)))

    def warning(self, text: str) -> None:
        self.events.put(("warning", self.serial, text))

    def trial_finished(self, result: Any, best: Any) -> None:
        self.quota.trial_done()
        self.events.put(("trial", self.serial, (result, best)))


def _interrupted(signum: int, frame: Any) -> None:
    # A second Ctrl-C (the terminal's and the supervisor's) must not cut short the
    # recording of the trial the first one interrupted.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def _end_with_supervisor(alive: Any) -> None:
    """End this worker the moment its supervisor is gone (killed with -9, a lost machine).

    Nobody would relay its progress or count its trials any more; its trial stays
    RUNNING, as the supervisor's own did before, until a heartbeat check fails and
    retries it. ``alive`` is a pipe only the supervisor writes to (it never does): it
    reads as ended once the supervisor is. (A forked worker's parent is the fork server.)
    """
    try:
        alive.recv()
    except EOFError:
        pass
    os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class _Place:
    """Where a worker runs: its supervisor's folder and environment as they are now.

    A forked worker would otherwise have the fork server's, as they were when it started.
    """

    folder: str
    environment: dict[str, str]

    @classmethod
    def here(cls) -> _Place:
        return cls(os.getcwd(), dict(os.environ))

    def enter(self) -> None:
        os.chdir(self.folder)
        os.environ.clear()
        os.environ.update(self.environment)


def _work(work_name: str, config: TuneConfig, slot: int, serial: int, place: _Place,
          setup: tuple[int, float], events: Any, quota: Quota, orders: Any,
          alive: Any) -> None:
    """A worker process's body. It starts with Ctrl-C ignored (see :func:`_ctrl_c_ignored`).

    ``work_name``'s module is the fork server's, already imported; ``setup`` is the
    machine's GPU count and the run's start (``time.time()``). Set up, the worker waits
    for the supervisor's order to train (:data:`Work`'s ``ready``).
    """
    place.enter()
    threading.Thread(target=_end_with_supervisor, args=(alive,), daemon=True).start()
    signal.signal(signal.SIGINT, _interrupted)

    def ready() -> None:
        events.put(("ready", serial, None))
        orders.recv()

    try:
        with native_stderr_hidden():
            module, name = work_name.split(":")
            work = getattr(importlib.import_module(module), name)
            gpus, started = setup
            share_machine(config.workers, slot, gpus)
            setup_devices()
        listener = _QueueListener(events, serial, quota)
        reason = work(config, listener, quota.spent, started, ready)
    except KeyboardInterrupt:  # its trial is already marked FAIL, "interrupted"
        return
    except AutodlError as error:  # the storage became unwritable: the run cannot go on
        events.put(("error", serial, str(error)))
        return
    events.put(("exit", serial, (quota.recycle, reason)))


@contextlib.contextmanager
def _ctrl_c_ignored() -> Iterator[None]:
    """Start processes that inherit Ctrl-C ignored.

    The fork server keeps that disposition for the workers it forks, so that one pressed
    while a worker starts prints no traceback; a worker handles Ctrl-C once it can.
    """
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def exit_cause(exitcode: int) -> str:
    """How a worker process ended (``Process.exitcode``), in words."""
    if exitcode == -signal.SIGKILL:  # what the kernel's out-of-memory killer sends
        return "worker killed by SIGKILL: out of memory?"
    if exitcode < 0:
        return f"worker crashed: {signal.Signals(-exitcode).name}"
    return f"worker exited with code {exitcode}"


@dataclass
class _Process:
    """One worker process, as its supervisor sees it."""

    serial: int
    process: Any
    judged: Any  # its Quota.judged
    orders: Any  # the sending end of its orders
    launched: float  # time.monotonic()
    ready: float | None = None  # when it was set up and waiting to train
    trial: int | None = None  # the trial it is running
    trial_since: float = 0.0
    done: int = 0  # trials it finished
    busy: float = 0.0  # seconds it spent in them
    exit: tuple[bool, str | None] | None = None  # (recycle, reason) as the worker said

    def order(self, message: object) -> None:
        """Send the process an order; one that has died is the supervisor's loop's to find."""
        try:
            self.orders.send(message)
        except OSError:  # BrokenPipeError: it is gone
            pass

    def kill(self) -> None:
        self.process.kill()
        self.process.join()


@dataclass
class _Slot:
    """One of the ``--workers``: its process, and the successor waiting to take over."""

    number: int
    current: _Process | None = None
    successor: _Process | None = None
    no_successor: bool = False  # the study needs none for the current process


class Workers:
    """The worker processes of one run (see the module's docstring).

    Used as a context manager, it starts the fork server on entering, so that it imports
    TensorFlow while the tuning process checks its input, and leaves no worker behind on
    leaving, whatever happened; :meth:`run` starts and supervises the workers.

    Args:
        config: The study's configuration (validated).
        work: The trial loop the workers run (see :data:`Work`).
    """

    def __init__(self, config: TuneConfig, work: str = WORK) -> None:
        self.work_name = work
        self.config = config
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(["autodl._forkserver"])
        self.events = self.context.Queue()
        self.alive, self.supervisor_alive = self.context.Pipe(duplex=False)
        self.stop = self.context.Event()
        self.memory = config.worker_memory_bytes
        self.slots = [_Slot(number) for number in range(config.workers)]
        self.serials = itertools.count()
        self.processes: dict[int, tuple[_Slot, _Process]] = {}
        self.leaving: list[_Process] = []  # retired, and ending
        self.setup: tuple[int, float] | None = None  # (GPUs, the run's start), in run()
        self.reasons: list[str] = []
        self.errors: list[str] = []  # from workers that could not go on
        self.startup_failures = 0
        self.supervision: Supervision | None = None

    def __enter__(self) -> Workers:
        if self.slots:
            with _ctrl_c_ignored():  # (not in the docs, but public since Python 3.4)
                multiprocessing.forkserver.ensure_running()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """End every worker process: those retired get :data:`GRACE` seconds to end."""
        for slot in self.slots:
            for process in (slot.current, slot.successor):
                if process and process.process.is_alive():
                    process.kill()
            slot.current = slot.successor = None
        deadline = time.monotonic() + GRACE
        for process in self.leaving:
            process.process.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.process.is_alive():
                process.kill()
        self.leaving.clear()

    def _launch(self, slot: _Slot) -> _Process:
        """Start a process for ``slot``: it sets up, then awaits the order to train."""
        serial = next(self.serials)
        judged = self.context.Semaphore(0)
        receiving, sending = self.context.Pipe(duplex=False)
        quota = Quota(self.config.trials_per_worker, self.memory, self.stop, judged)
        process = self.context.Process(
            target=_work, daemon=True, name=f"autodl-worker-{slot.number}",
            args=(self.work_name, self.config, slot.number, serial, _Place.here(), self.setup,
                  self.events, quota, receiving, self.alive))
        with _ctrl_c_ignored():  # it may start the fork server
            process.start()
        receiving.close()
        started = _Process(serial, process, judged, sending, time.monotonic())
        self.processes[serial] = (slot, started)
        return started

    def run(self, supervision: Supervision, started: float) -> str | None:
        """Run the study's trials in the workers until it is complete or must stop.

        Call it once the study is open.

        Args:
            supervision: Told about every worker's progress and every lost trial.
            started: When the run began (``time.time()``).

        Returns:
            Why workers stopped before the study was complete, if any did.

        Raises:
            AutodlError: If a worker could not go on (the storage became unwritable).
            KeyboardInterrupt: On Ctrl-C, once every worker has ended.
        """
        self.supervision = supervision
        self.setup = (gpu_count(), started)
        for slot in self.slots:
            slot.current = self._launch(slot)
            slot.current.order("train")
        try:
            while any(slot.current for slot in self.slots):
                ended = [slot for slot in self.slots
                         for process in (slot.current, slot.successor)
                         if process and not process.process.is_alive()]
                self._relay(timeout=0.2)
                for slot in ended:
                    self._ended(slot)
                self._check_timeouts()
                self._start_successors()
                self.leaving = [p for p in self.leaving if p.process.is_alive()]  # reaped
                if self.supervision.stop_reason():
                    self.stop.set()
        except KeyboardInterrupt:
            self._interrupt()
            raise
        finally:
            self.close()  # after an error of the supervisor's own, or at the end
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

    def _handle(self, kind: str, serial: int, payload: Any) -> None:
        slot, process = self.processes[serial]
        if kind == "ready":
            process.ready = time.monotonic()
        elif kind == "started":
            process.trial, process.trial_since = payload, time.monotonic()
            self.startup_failures = 0
            self.supervision.trial_started(payload)
        elif kind == "epoch":
            self.supervision.epoch_end(*payload)
        elif kind == "resumed":
            self.supervision.trial_resumed(*payload)
        elif kind == "warning":
            self.supervision.warning(payload)
        elif kind == "trial":
            process.trial = None
            process.done += 1
            process.busy += time.monotonic() - process.trial_since
            self.supervision.trial_finished(*payload)
            if self.supervision.stop_reason():
                self.stop.set()
            process.judged.release()
        else:  # "exit" or "error": it starts no more trials
            if kind == "error":
                self.errors.append(payload)
                self.stop.set()
            process.exit = payload if kind == "exit" else (False, None)
            # Its successor need not wait for its end (about a second for TensorFlow's
            # process); on a GPU it must, for the memory it frees then.
            if not self.setup[0]:
                self._retire(slot, process)

    def _ended(self, slot: _Slot) -> None:
        """A slot's process ended: replace it, or let the slot close."""
        if slot.successor and not slot.successor.process.is_alive():
            successor, slot.successor = slot.successor, None
            self._lost_before_a_trial(successor)
        current = slot.current
        if current is None or current.process.is_alive():
            return
        current.process.join()
        if current.exit is not None:
            self._retire(slot, current)
            return
        slot.current = None
        cause = exit_cause(current.process.exitcode)
        if current.trial is not None:
            self.supervision.trial_lost(current.trial, FailKind.CRASHED, cause, retry=True)
        else:
            self._lost_before_a_trial(current)
        self._replace(slot)

    def _retire(self, slot: _Slot, process: _Process) -> None:
        """The slot's process starts no more trials: a successor takes over, or the slot closes."""
        if slot.current is not process:  # retired already: at its word, now at its end
            return
        recycle, reason = process.exit
        if reason:
            self.reasons.append(reason)
        slot.current = None
        self.leaving.append(process)
        if recycle:
            self._replace(slot)
        elif slot.successor:
            slot.successor.kill()
            slot.successor = None

    def _lost_before_a_trial(self, process: _Process) -> None:
        """A process ended before it started a trial: enough in a row stop the run."""
        self.startup_failures += 1
        if self.startup_failures >= STARTUP_FAILURES:
            cause = exit_cause(process.process.exitcode)
            self.reasons.append(f"{STARTUP_FAILURES} workers in a row ended before "
                                f"starting a trial; the last: {cause}")
            self.stop.set()

    def _replace(self, slot: _Slot) -> None:
        """Let the slot's successor train, or start one, unless no more trials should start."""
        slot.current, slot.successor, slot.no_successor = slot.successor, None, False
        if self.stop.is_set() or self.supervision.stop_reason():
            if slot.current:
                slot.current.kill()
                slot.current = None
            return
        slot.current = slot.current or self._launch(slot)
        slot.current.order("train")

    def _start_successors(self) -> None:
        """Start the successor of each worker whose trials left should end within a start-up.

        A start-up is the longest this run has measured, from a process's start to its
        being ready to train; the trials left take what the worker's trials took so far.
        """
        startups = [process.ready - process.launched
                    for _, process in self.processes.values() if process.ready]
        for slot in self.slots:
            current = slot.current
            if (not startups or current is None or slot.successor or slot.no_successor
                    or not current.done or self.stop.is_set()):
                continue
            left = self.config.trials_per_worker - current.done
            elapsed = time.monotonic() - current.trial_since if current.trial is not None else 0
            if left * current.busy / current.done - elapsed > SUCCESSOR_LEAD * max(startups):
                continue
            # None at the study's end, where the workers' trials left cover what it needs.
            working = [s.current for s in self.slots if s.current]
            quotas = sum(self.config.trials_per_worker - process.done for process in working)
            running = sum(process.trial is not None for process in working)
            if self.supervision.trials_to_start() + running <= quotas:
                slot.no_successor = True
            else:
                slot.successor = self._launch(slot)

    def _check_timeouts(self) -> None:
        limit = self.config.trial_timeout
        if limit is None:
            return
        for slot in self.slots:
            current = slot.current
            if (current and current.trial is not None
                    and time.monotonic() - current.trial_since > limit):
                current.kill()
                self._relay(timeout=0)  # what it sent before it was killed
                if current.trial is not None:  # unless it finished just in time
                    self.supervision.trial_lost(current.trial, FailKind.TIMEOUT,
                                                f"timed out after {limit:g} s", retry=False)
                self._replace(slot)

    def _interrupt(self) -> None:
        """Ctrl-C: let each running trial record itself as interrupted, then end every worker.

        The terminal sends Ctrl-C to the workers too; a ``kill -INT`` of this process
        alone reaches only it, so the workers are told here as well.
        """
        self.stop.set()
        self._relay(timeout=0)  # a trial that started just now
        running = []
        for slot in self.slots:
            if slot.successor:
                slot.successor.kill()
                slot.successor = None
            current = slot.current
            if current is None:
                continue
            if current.trial is None:  # starting or between trials: nothing to record
                current.kill()
            else:
                running.append(current)
                if current.process.is_alive():
                    os.kill(current.process.pid, signal.SIGINT)
        deadline = time.monotonic() + GRACE
        try:
            while (time.monotonic() < deadline
                   and any(process.process.is_alive() for process in running)):
                self._relay(timeout=0.1)  # each interrupted trial's line
            self._relay(timeout=0)
        except KeyboardInterrupt:  # pressed again: do not wait
            pass
        for process in running:
            if process.process.is_alive():
                process.kill()
            if process.trial is not None:
                self.supervision.trial_lost(process.trial, FailKind.INTERRUPTED,
                                            "stopped by the user", retry=False)
        for slot in self.slots:
            slot.current = None
