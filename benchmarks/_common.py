"""Helpers shared by the benchmarks: machine description, a silent listener, the CLI,
the epoch clock and the options with which a benchmark runs a column in a process of its own."""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path


def machine() -> str:
    """CPU model, core count, memory and library versions, for RESULTS.md."""
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import keras
    import optuna
    import tensorflow as tf

    from autodl.config import machine_memory

    memory = machine_memory() / 2**30
    return (f"{model}, {os.cpu_count()} cores, {memory:.0f} GiB, Python "
            f"{platform.python_version()}, TensorFlow {tf.__version__}, Keras "
            f"{keras.__version__}, Optuna {optuna.__version__}; "
            f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC")


def peak_rss_mib() -> float:
    """This process's peak resident memory so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    """This process's resident memory now."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Quiet:
    """A tune listener that prints nothing and keeps what the benchmark needs."""

    def __init__(self, on_trial=None):
        self.on_trial = on_trial

    def started(self, *args):
        pass

    def trial_started(self, *args):
        pass

    def epoch_end(self, *args):
        pass

    def trial_resumed(self, *args):
        pass

    def warning(self, text):
        print(f"warning: {text}")

    def trial_finished(self, result, best):
        if self.on_trial:
            self.on_trial(result)


def budget_args(args: argparse.Namespace) -> list[str]:
    """The options a column's process needs to run the same budget."""
    given = ["--dataset", args.dataset, "--trials", str(args.trials),
             "--epochs", str(args.epochs)]
    return given + (["--max-samples", str(args.max_samples)] if args.max_samples else [])


def autodl_program() -> list[str]:
    """The ``autodl`` command a user of this Python runs (its console script if installed)."""
    cli = Path(sys.executable).with_name("autodl")
    if cli.exists():
        return [str(cli)]
    return [shutil.which("autodl")] if shutil.which("autodl") else [sys.executable, "-m", "autodl"]


class EpochClock:
    """Seconds since a column's clock started, and (those seconds, val accuracy) per epoch.

    Args:
        t0: When the clock started, as ``time.time()`` gives it: by default, now.
    """

    def __init__(self, t0: float | None = None) -> None:
        self.t0 = time.time() if t0 is None else t0
        self.points: list[tuple[float, float]] = []

    def seconds(self) -> float:
        """Seconds since the clock started."""
        return time.time() - self.t0

    def record(self, val_accuracy: float) -> None:
        """Note one finished epoch."""
        self.points.append((round(self.seconds(), 3), float(val_accuracy)))

    def callback(self):
        """A Keras callback feeding this clock; KerasTuner's per-trial copies share it."""
        import keras

        clock = self

        class Tick(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                clock.record((logs or {})["val_accuracy"])

            def __deepcopy__(self, memo):  # KerasTuner deep-copies callbacks per trial
                return self

        return Tick()


def add_column_options(parser: argparse.ArgumentParser) -> None:
    """The hidden options with which a benchmark runs one column in a fresh process."""
    parser.add_argument("--column", help=argparse.SUPPRESS)  # run one column, in this process
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--t0", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)


def chosen_columns(parser: argparse.ArgumentParser, text: str, choices) -> list[str]:
    """The comma-separated columns of ``text``; a parser error names any not in ``choices``."""
    columns = [column.strip() for column in text.split(",") if column.strip()]
    unknown = [column for column in columns if column not in choices]
    if unknown or not columns:
        parser.error(f"unknown column {', '.join(unknown) or '(none)'}; "
                     f"choose from {', '.join(choices)}")
    return columns
