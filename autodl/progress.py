"""What ``autodl tune`` shows while it runs: a line per trial and, on a terminal, a status line.

The trial lines go to stdout, as a log. When stderr is a terminal, a status line at the
bottom of it shows the trials finished of the total as a bar, the pruned and failed
counts, the best value, the elapsed time, an estimate of the time left and each
running trial's epoch::

    [####------] 12/30  pruned 5  failed 0  best 0.9861  01:23 elapsed, ~02:04 left  trial 13
      epoch 4/20

(one line on the terminal). It is cleared before each trial line and drawn again after
it, so the log scrolls above it. Anywhere else (a pipe, a file, CI) only the trial lines
are written, with no escape codes.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from autodl.tuner import TrialResult

#: Characters in the bar of finished trials.
BAR_WIDTH = 10
#: Carriage return, then erase to the end of the line: the status line is redrawn in place.
_CLEAR = "\r\033[K"


def format_value(value: Any) -> str:
    """A hyperparameter value for people: floats to 4 significant digits."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_params(hyperparameters: dict[str, Any]) -> str:
    """``name=value`` pairs, space-separated."""
    return " ".join(f"{k}={format_value(v)}" for k, v in hyperparameters.items())


def trial_line(result: TrialResult, best: TrialResult | None) -> str:
    """The log line of a finished trial; a ``*`` marks the new best, or a Pareto-front trial.

    A trial of a study of several objectives shows its value of each (e.g.
    ``latency_ms 0.052``).
    """
    value = f"{result.value:.4f}" if result.value is not None else "  -   "
    new_best = best is not None and best.number == result.number
    mark = "*" if new_best or result.on_front else " "
    costs = "".join(f"{metric} {'-' if cost is None else format_value(cost)}  "
                    for metric, cost in result.costs.items())
    seconds = f"{result.seconds:6.1f}s" if result.seconds is not None else "      -"
    if result.state != "COMPLETE":
        detail = result.reason
    else:  # a completed trial's reason says why it trained fewer epochs than it might
        detail = format_params(result.hyperparameters)
        if result.reason:
            detail = f"({result.reason}) {detail}"
    return (f"trial {result.number:4d} {result.state:<8} val_acc {value}{mark} {costs}"
            f"epochs {result.epochs:3d} {seconds}  {detail}")


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"


def _is_terminal(stream: TextIO) -> bool:
    # A "dumb" terminal (Emacs shells, some CI runners) cannot erase a line.
    return stream.isatty() and os.environ.get("TERM") != "dumb"


class ProgressPrinter:
    """The tune listener of the command line (see :class:`autodl.tuner.TuneListener`).

    Use it as a context manager, so that the status line is gone when the run ends.

    Args:
        epochs: The study's epoch cap, shown as each running trial's epoch of it.
        out: Where the trial lines go (default: stdout).
        status: Where the status line goes, if it is a terminal (default: stderr).
        clock: Seconds from a fixed point, for the elapsed time (replaceable in tests).
    """

    def __init__(self, epochs: int, out: TextIO | None = None, status: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.epochs = epochs
        self.out = out or sys.stdout
        status = status or sys.stderr
        self.live = status if _is_terminal(status) else None
        self.clock = clock
        self.start = clock()
        self.requested: int | None = 0  # None: until the time budget ends
        self.budget_end: float | None = None  # on self.clock
        self.finished = 0  # complete or pruned, in the study
        self.finished_before = 0
        self.counts = {"PRUNED": 0, "FAIL": 0}  # this run's
        self.best: float | None = None
        self.running: dict[int, int] = {}  # trial number: its last epoch

    def __enter__(self) -> ProgressPrinter:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._clear()

    def started(self, study_name: str, storage_url: str, data: str, finished: int,
                requested: int | None, budget_left: float | None = None) -> None:
        """Announce the study and its data."""
        self.start = self.clock()
        self.finished = self.finished_before = finished
        self.requested = requested
        self.budget_end = None if budget_left is None else self.start + budget_left
        if requested is None:
            done, action = f"{finished} trials finished", "running more until the budget ends"
        else:
            todo = max(requested - finished, 0)
            done = f"{finished} of {requested} trials finished"
            action = f"running {todo} more" if todo else "nothing left to run"
        print(f"Study {study_name} ({storage_url}): {done}, {action}", file=self.out)
        print(f"Data: {data}", file=self.out, flush=True)
        self._draw()

    def trial_started(self, trial_number: int) -> None:
        """Show the trial on the status line, at epoch 0 until its first epoch ends."""
        self.running[trial_number] = 0
        self._draw()

    def epoch_end(self, trial_number: int, epoch: int, record: dict[str, float]) -> None:
        """Show the trial's epoch on the status line."""
        self.running[trial_number] = epoch
        self._draw()

    def trial_resumed(self, trial_number: int, series: int, epoch: int) -> None:
        """Say where a retried trial resumed, and show it at that epoch."""
        self.running[trial_number] = epoch
        self._line(f"trial {trial_number:4d} resumed at epoch {epoch} (the checkpoint of trial "
                   f"{series})" if epoch else
                   f"trial {trial_number:4d} retries trial {series} from epoch 0")

    def warning(self, text: str) -> None:
        """Print a warning line."""
        self._line(f"warning: {text}")

    def _line(self, text: str) -> None:
        """A log line above the status line."""
        self._clear()
        print(text, file=self.out, flush=True)
        self._draw()

    def trial_finished(self, result: TrialResult, best: TrialResult | None) -> None:
        """Print the trial's line above the status line, marking a new best with '*'."""
        self.running.pop(result.number, None)
        if result.state in ("COMPLETE", "PRUNED"):
            self.finished += 1
        if result.state in self.counts:
            self.counts[result.state] += 1
        if best is not None:
            self.best = best.value
        self._line(trial_line(result, best))

    def status(self) -> str:
        """The status line's text, e.g. ``[####----] 12/50  pruned 5 ... trial 13 epoch 4/20``."""
        best = "-" if self.best is None else f"{self.best:.4f}"
        elapsed = self.clock() - self.start
        if self.requested is None:  # no count to fill a bar: the budget ends the run
            parts, left = [f"{self.finished} finished"], 0
        else:
            filled = min(BAR_WIDTH * self.finished // max(self.requested, 1), BAR_WIDTH)
            parts = [f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] "
                     f"{self.finished}/{self.requested}"]
            left = self.requested - self.finished
        parts += [f"pruned {self.counts['PRUNED']}", f"failed {self.counts['FAIL']}",
                  f"best {best}"]
        timing = f"{_clock(elapsed)} elapsed"
        done_here, estimates = self.finished - self.finished_before, []
        if done_here and left > 0:  # wall time per finished trial: it counts the failed too
            estimates.append(elapsed / done_here * left)
        if self.budget_end is not None:  # the budget may end the run first
            estimates.append(max(self.budget_end - self.clock(), 0))
        if estimates:
            timing += f", ~{_clock(min(estimates))} left"
        parts.append(timing)
        parts += [f"trial {number} epoch {epoch}/{self.epochs}"
                  for number, epoch in sorted(self.running.items())]
        return "  ".join(parts)

    def _draw(self) -> None:
        if self.live:
            try:  # a terminal that does not know its size says 0
                width = os.get_terminal_size(self.live.fileno()).columns or 80
            except (OSError, ValueError):
                width = 80
            # One column short: a line that fills the width wraps, and \r cannot undo that.
            self.live.write(_CLEAR + self.status()[:width - 1])
            self.live.flush()

    def _clear(self) -> None:
        if self.live:
            self.live.write(_CLEAR)
            self.live.flush()
