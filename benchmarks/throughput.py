"""Trials per minute with 1, 2 and 4 workers on tiny trials, per storage.

    python benchmarks/throughput.py [--trials 24] [--workers 1 2 4] [--postgres URL]

Tiny trials (`mlp`, one small dense layer, 300 digits, 1 epoch, batch 256) make the
storage and the sampler, not training, the bottleneck. For each storage and worker
count, K processes run `autodl tune` on one study at once (as K machines, or
`--workers K`, would; each with its share of the CPU threads), and it reports:

* trials per minute, from the first trial's start to the last one's end (storage
  timestamps);
* the share of each trial's duration spent outside `fit` (storage writes, sampling,
  building and compiling the model): an upper bound on storage and sampling overhead;
* the share of each worker's trial loop spent inside Optuna's storage and sampler
  methods (timed by wrapping them in that worker), averaged over the workers.

PostgreSQL is measured when `--postgres URL` names a server (a fresh database is best).
Optuna's journal storage is not measured: autodl needs the RDB storage's heartbeat to
recover trials of killed workers.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import queue
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import optuna  # noqa: E402
from _common import Quiet, machine  # noqa: E402

from autodl.config import Fixed, Space, TuneConfig  # noqa: E402

TINY = {"learning_rate": 1e-2, "batch_size": 256, "optimizer": "adam", "weight_decay": 0.0,
        "depth": 2, "units": 32, "activation": "relu"}


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


def _worker(config: TuneConfig, index: int, workers: int, shares: multiprocessing.Queue) -> None:
    """One `autodl tune` process on the shared study; puts its storage+sampling share."""
    from autodl import tuner
    from autodl.runtime import setup_devices, share_machine

    share_machine(workers, index, gpus=0)
    setup_devices()
    timer = CallTimer()
    for name in dir(optuna.storages.BaseStorage):
        if not name.startswith("_") and callable(getattr(optuna.storages.RDBStorage, name)):
            timer.wrap(optuna.storages.RDBStorage, name)
    for name in ("infer_relative_search_space", "sample_relative", "sample_independent"):
        timer.wrap(optuna.samplers.TPESampler, name)
    run_trials = tuner.run_trials

    def timed_run_trials(*args, **kwargs):
        timer.seconds, start = 0.0, time.perf_counter()
        try:
            return run_trials(*args, **kwargs)
        finally:
            shares.put(timer.seconds / (time.perf_counter() - start))

    tuner.run_trials = timed_run_trials
    tuner.tune(config, Quiet())


def measure(storage: str, workers: int, trials: int) -> tuple[float, float, float]:
    """(trials per minute, share of trial time outside fit, storage+sampling share)."""
    study_name = f"throughput-{workers}-{time.time_ns()}"
    context = multiprocessing.get_context("spawn")
    shares = context.Queue()
    processes = []
    for index in range(workers):
        # Dropout stays searched, so the sampler has real work to do. workers=0: each of
        # these processes runs its trials itself, where the timer can see them.
        config = TuneConfig(arch="mlp", dataset="digits", trials=trials, epochs=1,
                            pruner="none", storage=storage, study=study_name, seed=index,
                            max_samples=300, workers=0,
                            space=Space({k: Fixed(v) for k, v in TINY.items()}))
        processes.append(context.Process(target=_worker,
                                         args=(config, index, workers, shares)))
    for process in processes:
        process.start()
    worker_shares = []
    while len(worker_shares) < workers:  # a worker that dies never puts its share
        try:
            worker_shares.append(shares.get(timeout=1))
        except queue.Empty:
            failed = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
            if failed:
                for process in processes:
                    process.kill()
                raise SystemExit(f"a worker failed with exit code {failed[0]}") from None
    for process in processes:
        process.join()
    done = [t for t in optuna.load_study(study_name=study_name, storage=storage).trials
            if t.datetime_complete is not None]
    if len(done) != trials:
        raise SystemExit(f"expected {trials} finished trials, the study has {len(done)}")
    span = (max(t.datetime_complete for t in done)
            - min(t.datetime_start for t in done)).total_seconds()
    outside = [1 - t.user_attrs["train_seconds"]
               / (t.datetime_complete - t.datetime_start).total_seconds() for t in done]
    return 60 * len(done) / span, statistics.mean(outside), statistics.mean(worker_shares)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--postgres", help="a PostgreSQL URL to measure as well")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print("| storage | workers | trials/min | share of trial time outside fit "
          "| share of worker time in storage and sampler calls |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        storages = {"sqlite": f"sqlite:///{folder}/autodl.db"}
        if args.postgres:
            storages["postgresql"] = args.postgres
        for name, url in storages.items():
            for workers in args.workers:
                rate, outside, calls = measure(url, workers, args.trials)
                print(f"| {name} | {workers} | {rate:.1f} | {outside:.0%} | {calls:.1%} |",
                      flush=True)


if __name__ == "__main__":
    main()
