"""The live progress of `autodl tune`: a status line on a terminal, plain trial lines elsewhere."""

from __future__ import annotations

import dataclasses
import fcntl
import io
import os
import pty
import struct
import subprocess
import sys
import termios
import threading

import pytest
from conftest import tune_args

from autodl.progress import ProgressPrinter, trial_line
from autodl.tuner import TrialResult


def result(number: int, state: str = "COMPLETE", value: float | None = 0.9) -> TrialResult:
    reason = None if state == "COMPLETE" else f"{state.lower()} at epoch 1"
    return TrialResult(number, state, value, 2, 1.5, {"learning_rate": 0.001}, reason)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def terminal(monkeypatch):
    """A pseudo-terminal of 200 columns: ``(stream writing to it, read what it showed)``."""
    monkeypatch.setenv("TERM", "xterm")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 200, 0, 0))
    attrs = termios.tcgetattr(slave)
    attrs[1] &= ~termios.OPOST  # as written: no \n -> \r\n translation
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    stream = os.fdopen(slave, "w")

    def shown() -> str:
        stream.flush()
        os.set_blocking(master, False)
        chunks = []
        while True:
            try:
                chunks.append(os.read(master, 65536))
            except BlockingIOError:
                return b"".join(chunks).decode()

    yield stream, shown
    stream.close()
    os.close(master)


def run_three_trials(printer: ProgressPrinter, clock: Clock) -> None:
    printer.started("s", "sqlite:///x.db", "digits", finished=1, requested=5)
    printer.epoch_end(1, 1, {"val_accuracy": 0.5})
    printer.epoch_end(1, 2, {"val_accuracy": 0.8})
    clock.now += 30
    printer.trial_finished(result(1), result(1))
    printer.epoch_end(2, 1, {"val_accuracy": 0.3})
    clock.now += 10
    printer.trial_finished(result(2, "PRUNED", 0.3), result(1))
    clock.now += 20
    printer.trial_finished(result(3, "FAIL", None), result(1))
    printer.epoch_end(4, 3, {"val_accuracy": 0.7})


def test_terminal_shows_bar_counts_best_times_and_the_running_epoch(terminal):
    stream, shown = terminal
    clock, out = Clock(), io.StringIO()
    printer = ProgressPrinter(epochs=5, out=out, status=stream, clock=clock)
    with printer:
        run_three_trials(printer, clock)
        screen = shown()
        # 3 of 5 finished (1 before this run): 2 in 60 s here, so 2 more take ~60 s.
        assert printer.status() == ("[######----] 3/5  pruned 1  failed 1  "
                                    "best 0.9000  01:00 elapsed, ~01:00 left  "
                                    "trial 4 epoch 3/5")
    assert screen.endswith("\r\x1b[K" + printer.status())
    assert "[##--------] 1/5  pruned 0  failed 0  best -  00:00 elapsed  " \
           "trial 1 epoch 2/5" in screen
    assert "~" not in screen.split("best 0.9000")[0]  # no estimate before a trial ends
    assert shown() == "\r\x1b[K"  # the status line is gone when the run ends
    # The log is untouched: plain lines on stdout.
    lines = out.getvalue().splitlines()
    assert lines[0] == "Study s (sqlite:///x.db): 1 of 5 trials finished, running 4 more"
    assert lines[2].startswith("trial    1 COMPLETE val_acc 0.9000* epochs   2    1.5s  "
                               "learning_rate=0.001")
    assert lines[3].startswith("trial    2 PRUNED   val_acc 0.3000  ")
    assert lines[4].startswith("trial    3 FAIL     val_acc   -     ")
    assert "\x1b" not in out.getvalue()


def test_a_run_until_the_budget_shows_counts_without_a_bar():
    clock, out = Clock(), io.StringIO()
    printer = ProgressPrinter(epochs=5, out=out, status=io.StringIO(), clock=clock)
    printer.started("s", "sqlite:///x.db", "digits", finished=2, requested=None,
                    budget_left=300)
    clock.now += 30
    printer.trial_finished(result(3), result(3))
    assert out.getvalue().splitlines()[0] == (
        "Study s (sqlite:///x.db): 2 trials finished, running more until the budget ends")
    # No total, so no bar: the budget, not a count, ends the run, and says what is left.
    assert printer.status() == ("3 finished  pruned 0  failed 0  best 0.9000  "
                                "00:30 elapsed, ~04:30 left")


def test_the_time_left_is_the_budgets_when_it_ends_the_run_first():
    clock = Clock()
    printer = ProgressPrinter(epochs=5, out=io.StringIO(), status=io.StringIO(), clock=clock)
    printer.started("s", "sqlite:///x.db", "digits", finished=0, requested=10, budget_left=60)
    clock.now += 30
    printer.trial_finished(result(1), result(1))
    # Nine more trials at 30 s each would take 04:30; the budget ends in 00:30.
    assert printer.status().endswith("00:30 elapsed, ~00:30 left")


def test_a_completed_trial_line_says_why_it_stopped_short():
    stopped = dataclasses.replace(result(7), reason="stopped by the time budget")
    assert trial_line(stopped, None).endswith(
        "epochs   2    1.5s  (stopped by the time budget) learning_rate=0.001")
    assert trial_line(result(7), None).endswith("epochs   2    1.5s  learning_rate=0.001")


def test_status_line_fits_a_narrow_terminal(terminal):
    stream, shown = terminal
    fcntl.ioctl(stream.fileno(), termios.TIOCSWINSZ, struct.pack("HHHH", 24, 40, 0, 0))
    printer = ProgressPrinter(epochs=5, out=io.StringIO(), status=stream)
    printer.started("s", "sqlite:///x.db", "digits", finished=0, requested=5)
    line = shown().rpartition("\x1b[K")[2]
    assert len(line) == 39 and line.startswith("[---")  # never wraps onto a second line


def test_elsewhere_only_the_plain_lines():
    clock, out, err = Clock(), io.StringIO(), io.StringIO()
    with ProgressPrinter(epochs=5, out=out, status=err, clock=clock) as printer:
        run_three_trials(printer, clock)
    assert err.getvalue() == ""
    assert "\x1b" not in out.getvalue() and "\r" not in out.getvalue()
    assert [line.split()[:3] for line in out.getvalue().splitlines()[2:]] == [
        ["trial", "1", "COMPLETE"], ["trial", "2", "PRUNED"], ["trial", "3", "FAIL"]]


def test_a_dumb_terminal_gets_no_escape_codes(terminal, monkeypatch):
    stream, shown = terminal
    monkeypatch.setenv("TERM", "dumb")
    with ProgressPrinter(epochs=5, out=io.StringIO(), status=stream) as printer:
        printer.started("s", "sqlite:///x.db", "digits", finished=0, requested=5)
        printer.trial_finished(result(0), result(0))
    assert shown() == ""


def test_tune_under_a_pseudo_terminal(tmp_path, tiny_npz):
    """A real run, its stderr a terminal: the status line there, the log intact on stdout."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 200, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "autodl",
         *tune_args(f"npz:{tiny_npz}", "--study", "pty", "--pruner", "none", trials=2)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=slave, text=True,
        env={**os.environ, "TERM": "xterm"},
    )
    os.close(slave)
    screen = []

    def read() -> None:  # until the child closes the terminal (EIO on Linux)
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return
            if not chunk:
                return
            screen.append(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    out, _ = process.communicate(timeout=300)
    reader.join(timeout=10)
    os.close(master)
    err = b"".join(screen).decode(errors="replace")
    assert process.returncode == 0, err
    assert "0/2  pruned 0  failed 0  best -" in err
    assert "epoch 1/2" in err and "epoch 2/2" in err
    assert "1/2  pruned 0  failed 0  best 0." in err and "left" in err
    assert err.rfind("\r\x1b[K") > err.rfind("elapsed")  # cleared before the summary
    lines = out.splitlines()
    assert [line[:19] for line in lines if line.startswith("trial")] == [
        "trial    0 COMPLETE", "trial    1 COMPLETE"]
    assert "\x1b" not in out and "2 of 2 trials finished" in out
