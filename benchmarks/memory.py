"""Memory of a long study: the whole process tree's peak RSS early and late, supervised
worker processes against every trial in one process.

    python benchmarks/memory.py [--trials 200]

Runs `mlp` on digits with the default search space (2 epochs a trial, no pruning, so
every trial trains a differently shaped model) twice: as `autodl tune` runs it (trials
in a supervised worker, replaced every `--trials-per-worker` trials) and with
`--workers 0` (every trial in the tuning process, as before workers were supervised),
each in a fresh process (a run leaves state behind: the fork server, TensorFlow's).
A thread samples the memory of this process and all its descendants (RSS, and PSS,
which counts a shared page once) every 0.1 s; a sample belongs to the window of
finished trials it was taken in. Target (supervised): peak RSS during trials 190-200
<= 1.05 x peak RSS during trials 10-20.

A worker's successor starts shortly before its last trial ends, so the early window
(ending at the first replacement) holds two workers for a while and the last (ending
with the study) one: the script also compares the early window with the last one that
ends at a replacement, the same moment of a worker's life.

It also times what replacing a worker costs: the gap between a trial's end and the
next one's start where a new worker started, against the other gaps.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from _common import Quiet, machine  # noqa: E402

from autodl.config import TRIALS_PER_WORKER, TuneConfig  # noqa: E402
from autodl.runtime import setup_devices  # noqa: E402
from autodl.tuner import tune  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")


def tree_memory_mib(root: int) -> tuple[float, float]:
    """Resident memory of process ``root`` and all its descendants: RSS, and PSS.

    RSS counts a page shared by several processes (TensorFlow's libraries, what a forked
    worker shares with its fork server) in each of them; PSS splits it between them, so
    the tree's PSS is the memory it takes.
    """
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:  # the command name may hold spaces: the parent follows its closing ")"
                parents[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, grew = {root}, True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= children
        grew = bool(children)
    rss = pss = 0
    for pid in tree:
        try:
            rss += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
            pss += next(int(line.split()[1]) for line in
                        Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
                        if line.startswith("Pss:")) * 1024
        except (OSError, IndexError, StopIteration):
            continue  # it ended meanwhile
    return rss / 2**20, pss / 2**20


class Recorder(Quiet):
    """Samples the tree's memory against trials finished, and times trial starts."""

    def __init__(self) -> None:
        super().__init__()
        self.finished = 0
        # Trials finished when sampled: peak RSS and PSS (MiB) then.
        self.peaks: dict[int, float] = {}
        self.pss_peaks: dict[int, float] = {}
        self.gaps: list[float] = []  # from each trial's end to the next one's start
        self.last_end: float | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while not self.done.wait(0.1):
            rss, pss = tree_memory_mib(os.getpid())
            self.peaks[self.finished] = max(self.peaks.get(self.finished, 0.0), rss)
            self.pss_peaks[self.finished] = max(self.pss_peaks.get(self.finished, 0.0), pss)

    def trial_started(self, trial_number: int) -> None:
        if self.last_end is not None:
            self.gaps.append(time.perf_counter() - self.last_end)

    def trial_finished(self, result, best) -> None:
        self.finished += 1
        self.last_end = time.perf_counter()

    def peak(self, start: int, end: int, pss: bool = False) -> float:
        """Peak RSS (or PSS) in MiB while ``start`` to ``end`` trials had finished."""
        peaks = self.pss_peaks if pss else self.peaks
        return max(mib for finished, mib in peaks.items() if start <= finished < end)


def run(trials: int, workers: int, trials_per_worker: int,
        folder: str) -> tuple[Recorder, float]:
    config = TuneConfig(arch="mlp", trials=trials, epochs=2, pruner="none", workers=workers,
                        trials_per_worker=trials_per_worker, seed=0, study="memory",
                        storage=f"sqlite:///{folder}/w{workers}.db")
    recorder = Recorder()
    start = time.perf_counter()
    tune(config, recorder)
    recorder.done.set()
    return recorder, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--window", type=int, default=10, help="trials per window: the early "
                        "window is the second one")
    parser.add_argument("--trials-per-worker", type=int, default=TRIALS_PER_WORKER)
    parser.add_argument("--workers", type=int, help="run this one mode here (internal)")
    args = parser.parse_args()
    early, late = (args.window, 2 * args.window), (args.trials - args.window, args.trials)
    if args.workers is None:
        print(f"machine: {machine()}")
        print(f"mlp on digits, {args.trials} trials of 2 epochs, seed 0, a new worker every "
              f"{args.trials_per_worker} trials; peak RSS of the process tree while trials "
              f"{early[0]}-{early[1]} and {late[0]}-{late[1]} were running")
        print(f"| run | peak {early[0]}-{early[1]} (MiB) | peak {late[0]}-{late[1]} (MiB) "
              f"| ratio | PSS {early[0]}-{early[1]} | PSS {late[0]}-{late[1]} | wall (s) |")
        print("|---|---:|---:|---:|---:|---:|---:|", flush=True)
        for workers in (1, 0):
            subprocess.run([sys.executable, __file__, *sys.argv[1:], "--workers", str(workers)],
                           check=True)
        return
    setup_devices()
    name = "supervised worker (default)" if args.workers else "one process"
    with tempfile.TemporaryDirectory() as folder:
        recorder, wall = run(args.trials, args.workers, args.trials_per_worker, folder)
    first, last = recorder.peak(*early), recorder.peak(*late)
    print(f"| {name} | {first:.0f} | {last:.0f} | {last / first:.3f} | "
          f"{recorder.peak(*early, pss=True):.0f} | "
          f"{recorder.peak(*late, pss=True):.0f} | {wall:.0f} |", flush=True)
    if args.workers:
        every = args.trials_per_worker
        replacement = (args.trials - 1) // every * every
        if replacement > early[1]:
            same = recorder.peak(replacement - args.window, replacement)
            print(f"  peak {replacement - args.window}-{replacement} (ending at a "
                  f"replacement, as {early[0]}-{early[1]} does): {same:.0f} MiB, "
                  f"{same / first:.3f} x {early[0]}-{early[1]}")
        replaced = [gap for n, gap in enumerate(recorder.gaps, 1) if n % every == 0]
        kept = [gap for n, gap in enumerate(recorder.gaps, 1) if n % every]
        print(f"  between trials: {statistics.median(kept):.2f} s (median); where a "
              f"new worker started (every {every} trials, {len(replaced)} times): "
              f"{statistics.median(replaced):.2f} s (median)")

if __name__ == "__main__":
    main()
