"""What supervised workers cost: the quickstart study in a worker process against the same
study with every trial in the tuning process.

    python benchmarks/workers.py [--trials 50] [--repeats 2]

Runs `autodl tune --arch cnn --trials 50 --seed 0` as a user does, in a fresh process
each time, once as shipped (trials in a supervised worker, replaced every
`--trials-per-worker` trials) and once with `--workers 0` (every trial in the `autodl`
process, as before workers were supervised); with `--repeats 2` the order is then
reversed (ABBA), so a machine that slows down or speeds up over the run favours
neither. Both must run the same trials (the sampler is seeded by the trial number):
the script checks it. Target: supervised at most 1.03 x one process.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import optuna
from _common import machine

MODES = {"supervised worker (default)": [], "one process (--workers 0)": ["--workers", "0"]}


def run(folder: str, study: str, trials: int, extra: list[str]) -> tuple[float, list]:
    """Wall seconds of one `autodl tune` run, and its trials (state, params, value)."""
    storage = f"sqlite:///{folder}/{study}.db"
    command = [sys.executable, "-m", "autodl", "tune", "--arch", "cnn", "--trials", str(trials),
               "--seed", "0", "--storage", storage, "--study", study, *extra]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=folder,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    wall = time.perf_counter() - start
    trials_run = optuna.load_study(study_name=study, storage=storage).trials
    return wall, [(t.state.name, t.params, t.value) for t in trials_run]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=2, help="1: AB; 2: ABBA")
    parser.add_argument("--epochs", type=int, help="epochs per trial (default: autodl's)")
    args = parser.parse_args()
    epochs = ["--epochs", str(args.epochs)] if args.epochs else []
    print(f"machine: {machine()}")
    print(f"`autodl tune --arch cnn --trials {args.trials} --seed 0` (digits)")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    walls: dict[str, list[float]] = {mode: [] for mode in MODES}
    trials_of: dict[str, list] = {}
    order = list(MODES)
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(args.repeats):
            for mode in order if repeat % 2 == 0 else order[::-1]:
                study = f"{'one' if MODES[mode] else 'supervised'}-{repeat}"
                wall, trials_run = run(folder, study, args.trials, MODES[mode] + epochs)
                walls[mode].append(wall)
                trials_of.setdefault(mode, trials_run)
                print(f"  {mode}: {wall:.1f} s", flush=True)
    same = trials_of[order[0]] == trials_of[order[1]]
    print(f"same trials (states, parameters, values) in both: {'yes' if same else 'NO'}")
    print("| run | wall (s), each | mean (s) |")
    print("|---|---|---:|")
    for mode, times in walls.items():
        print(f"| {mode} | {', '.join(f'{t:.1f}' for t in times)} | "
              f"{sum(times) / len(times):.1f} |")
    supervised, alone = (sum(walls[mode]) / len(walls[mode]) for mode in order)
    print(f"supervised / one process: {supervised / alone:.3f}")


if __name__ == "__main__":
    main()
