"""Memory of a long study: peak RSS after 5 and after 40 small trials, one process.

    python benchmarks/memory.py [--trials 40]

Runs `mlp` on digits with the default search space (2 epochs a trial, so every
trial builds a differently shaped model) and records the process's resident
memory as trials finish. Target: peak after 40 trials <= 1.15 x peak after 5.
"""

from __future__ import annotations

import argparse
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from _common import Quiet, current_rss_mib, machine, peak_rss_mib  # noqa: E402

from autodl.config import TuneConfig  # noqa: E402
from autodl.runtime import setup_devices  # noqa: E402
from autodl.tuner import tune  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--early", type=int, default=5)
    args = parser.parse_args()
    setup_devices()
    samples: dict[int, tuple[float, float]] = {}
    finished = []

    def record(result) -> None:
        finished.append(result.number)
        samples[len(finished)] = (peak_rss_mib(), current_rss_mib())

    with tempfile.TemporaryDirectory() as folder:
        config = TuneConfig(arch="mlp", trials=args.trials, epochs=2, pruner="none",
                            storage=f"sqlite:///{folder}/autodl.db", study="memory", seed=0)
        tune(config, Quiet(record))
    early_peak, early_now = samples[args.early]
    late_peak, late_now = samples[max(samples)]
    print(f"machine: {machine()}")
    print(f"after {args.early} trials: peak RSS {early_peak:.0f} MiB, current {early_now:.0f} MiB")
    print(f"after {max(samples)} trials: peak RSS {late_peak:.0f} MiB, current {late_now:.0f} MiB")
    print(f"peak ratio: {late_peak / early_peak:.3f}")


if __name__ == "__main__":
    main()
