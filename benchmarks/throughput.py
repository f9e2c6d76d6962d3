"""Trials per minute with 1, 2 and 4 workers on tiny trials, per storage.

    python benchmarks/throughput.py [--trials 24] [--workers 1 2 4] [--postgres URL]

Tiny trials (`mlp`, one small dense layer, 300 digits, 1 epoch, batch 256) make the
storage and the sampler, not training, the bottleneck. For each storage and worker
count it runs one `autodl tune --workers K` study and reports:

* trials per minute, from the first trial's start to the last one's end (storage
  timestamps);
* the share of each trial's duration spent outside `fit` — storage writes, sampling,
  building and compiling the model — an upper bound on storage and sampling overhead;
* with one worker, in this process, the share of the whole run spent inside Optuna's
  storage and sampler methods (timed by wrapping them).

PostgreSQL is measured when `--postgres URL` names a server (a fresh database is best).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import optuna  # noqa: E402
from _common import Quiet, machine  # noqa: E402

from autodl.config import Fixed, Space, TuneConfig  # noqa: E402
from autodl.tuner import setup_devices, tune  # noqa: E402

TINY = {"learning_rate": 1e-2, "batch_size": 256, "optimizer": "adam", "weight_decay": 0.0,
        "depth": 2, "units": 32, "activation": "relu"}


def measure(storage: str, workers: int, trials: int) -> tuple[float, float]:
    """(trials per minute, mean share of trial time outside fit) of one study."""
    study_name = f"throughput-{workers}-{time.time_ns()}"
    # Dropout stays searched, so the sampler has real work to do.
    config = TuneConfig(arch="mlp", dataset="digits", trials=trials, epochs=1, pruner="none",
                        storage=storage, study=study_name, workers=workers, seed=0,
                        max_samples=300, space=Space({k: Fixed(v) for k, v in TINY.items()}))
    tune(config, Quiet())
    done = [t for t in optuna.load_study(study_name=study_name, storage=storage).trials
            if t.datetime_complete is not None]
    span = (max(t.datetime_complete for t in done)
            - min(t.datetime_start for t in done)).total_seconds()
    outside = [1 - t.user_attrs["train_seconds"]
               / (t.datetime_complete - t.datetime_start).total_seconds() for t in done]
    return 60 * len(done) / span, statistics.mean(outside)


class CallTimer:
    """Adds up the time spent in the storage's and the sampler's methods (one process)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.depth = 0

    def wrap(self, owner: type, name: str) -> None:
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            self.depth += 1
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.depth -= 1
                if self.depth == 0:  # nested calls count once
                    self.seconds += time.perf_counter() - start

        setattr(owner, name, timed)


def storage_and_sampling_share(storage: str, trials: int) -> float:
    """Share of one worker's trial time spent in Optuna's storage and sampler calls."""
    timer = CallTimer()
    storage_class = optuna.storages.RDBStorage
    for name in dir(optuna.storages.BaseStorage):
        if not name.startswith("_") and callable(getattr(storage_class, name)):
            timer.wrap(storage_class, name)
    sampler_class = optuna.samplers.TPESampler
    for name in ("infer_relative_search_space", "sample_relative", "sample_independent"):
        timer.wrap(sampler_class, name)
    study_name = f"calls-{time.time_ns()}"
    config = TuneConfig(arch="mlp", dataset="digits", trials=trials, epochs=1, pruner="none",
                        storage=storage, study=study_name, seed=0, max_samples=300,
                        space=Space({k: Fixed(v) for k, v in TINY.items()}))
    timer.seconds = 0.0
    start = time.perf_counter()
    tune(config, Quiet())
    return timer.seconds / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--postgres", help="a PostgreSQL URL to measure as well")
    args = parser.parse_args()
    setup_devices()
    print(f"machine: {machine()}")
    print("| storage | workers | trials/min | share of trial time outside fit |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        storages = {"sqlite": f"sqlite:///{folder}/autodl.db"}
        if args.postgres:
            storages["postgresql"] = args.postgres
        for name, url in storages.items():
            for workers in args.workers:
                rate, outside = measure(url, workers, args.trials)
                print(f"| {name} | {workers} | {rate:.1f} | {outside:.0%} |", flush=True)
        for name, url in storages.items():
            share = storage_and_sampling_share(url, args.trials)
            print(f"{name}, 1 worker: {share:.1%} of the run in Optuna storage and sampler calls")


if __name__ == "__main__":
    main()
