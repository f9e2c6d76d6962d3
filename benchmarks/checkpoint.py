"""What trial checkpoints save and what they cost: a study killed with SIGKILL again and
again, and the epoch time of `cnn` on MNIST with and without a checkpoint every epoch.

    python benchmarks/checkpoint.py [--part chaos|cost|both] [--kills 20] [--trials 40]
        [--epochs 10] [--cost-trials 8] [--cost-epochs 3] [--seed 0]

Chaos: `autodl tune --arch cnn --dataset digits --trials 40 --epochs 10 --pruner none
--patience 10 --heartbeat 1` runs once without kills (the reference), then twice more,
with checkpoints (the default, every epoch) and with `--checkpoint-every 0` (a lost
trial starts again from epoch 0). Each of these is killed like a preempted machine
(SIGKILL to its whole process group) `--kills` times, at a seeded random moment after its
start, and run again 2.5 s later (the lost trial's heartbeat is then stale), until a
last run finishes the study. The script checks that the study ends with exactly
`--trials` finished trials and that no trial finished before a kill was lost or changed,
and counts the epochs each interrupted attempt lost: the epochs it completed less the
epoch its retry resumed from (the epoch in progress at the kill is not counted).
Target: the epochs trained in all exceed the reference's by at most 1 per kill.

Cost: `autodl tune --arch cnn --dataset idx:../shared/datasets/mnist --seed 0 --pruner
none` with `--checkpoint-every 1` and `--checkpoint-every 0`, in the order ABBA so that a
machine that slows down or speeds up favours neither, compared trial by trial (the same
seed gives the same trials: the script checks it). Target: a checkpoint every epoch adds
at most 3% to the epoch time.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from _common import machine
from optuna.trial import FrozenTrial, TrialState

from autodl.lost_trials import series_of
from autodl.storage import FailKind, TrialAttr

MNIST = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "mnist"
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
#: After a kill: twice `--heartbeat 1`, and a margin, so the rerun finds the trial lost.
STALE_WAIT = 2.5
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
#: How a trial lost with its process is marked (none: found by the heartbeat check).
LOST_KINDS = (None, FailKind.CRASHED, FailKind.INTERRUPTED)


def tune_command(folder: Path, study: str, args: list[str]) -> list[str]:
    """The `autodl tune` command line of a study in the folder's SQLite file."""
    return [sys.executable, "-m", "autodl", "tune", "--storage",
            f"sqlite:///{folder}/{study}.db", "--study", study, *args]


def load(folder: Path, study: str) -> list[FrozenTrial]:
    """The study's trials (none if it is not created yet)."""
    try:
        return optuna.load_study(study_name=study,
                                 storage=f"sqlite:///{folder}/{study}.db").trials
    except KeyError:  # killed before the study was created
        return []


def reached(trial: FrozenTrial) -> int:
    """Epochs the attempt had completed, those it resumed from included."""
    # An attempt killed before it re-reported its resumed epochs still had them.
    return max(max(trial.intermediate_values, default=0), resumed(trial))


def resumed(trial: FrozenTrial) -> int:
    """The epoch the attempt resumed from (0: it started afresh)."""
    return trial.user_attrs.get(TrialAttr.RESUMED_FROM_EPOCH, 0)


def finished(trials: list[FrozenTrial]) -> dict[int, tuple]:
    """The finished trials: number -> (state, value, params)."""
    return {t.number: (t.state.name, t.value, t.params) for t in trials if t.state in FINISHED}


@dataclass
class Chaos:
    """One chaos run of a study and what it left."""

    mode: str
    wall: float = 0.0
    kills: int = 0
    early_exits: list[int] = field(default_factory=list)
    snapshots: list[dict[int, tuple]] = field(default_factory=list)
    tracebacks: list[str] = field(default_factory=list)
    final_rc: int | None = None
    trials: list[FrozenTrial] = field(default_factory=list)


def run_logged(command: list[str], folder: Path, log: Path) -> subprocess.Popen:
    """Start `autodl tune` in its own session (so its whole tree can be killed at once)."""
    with open(log, "wb") as out:
        return subprocess.Popen(command, cwd=folder, env=ENV, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def chaos(folder: Path, study: str, args: list[str], kills: int, window: tuple[float, float],
          rng: random.Random) -> Chaos:
    """Run the study, killing it `kills` times, then once to its end."""
    result = Chaos(study)
    command = tune_command(folder, study, args)
    logs = folder / "logs"
    logs.mkdir(exist_ok=True)
    start = time.perf_counter()
    for k in range(kills):
        delay = rng.uniform(*window)
        process = run_logged(command, folder, logs / f"{study}-{k}.log")
        launched = time.perf_counter()
        try:
            rc = process.wait(timeout=delay)
            result.early_exits.append(rc)  # it ended before its kill: nothing to kill
            print(f"  run {k}: exited {rc} after {time.perf_counter() - launched:.1f} s, "
                  f"before its kill at {delay:.1f} s", flush=True)
            continue
        except subprocess.TimeoutExpired:
            pass
        trials = load(folder, study)
        result.snapshots.append(finished(trials))
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        result.kills += 1
        running = [f"#{t.number} (epoch {reached(t)})" for t in trials
                   if t.state == TrialState.RUNNING]
        print(f"  kill {k + 1} at {time.perf_counter() - launched:.1f} s: "
              f"{len(result.snapshots[-1])} finished, running "
              f"{', '.join(running) or 'none'}", flush=True)
        time.sleep(STALE_WAIT)
    log = logs / f"{study}-final.log"
    process = run_logged(command, folder, log)
    result.final_rc = process.wait()
    result.wall = time.perf_counter() - start
    result.trials = load(folder, study)
    result.tracebacks = sorted(path.name for path in logs.glob(f"{study}-*.log")
                               if "Traceback" in path.read_text(errors="replace"))
    if result.final_rc != 0:
        print(f"  last run exited {result.final_rc}; its output ends:\n"
              + log.read_text(errors="replace")[-3000:], flush=True)
    return result


def epochs_trained(trials: list[FrozenTrial]) -> int:
    """Epochs the attempts themselves trained (resumed epochs counted once)."""
    return sum(reached(t) - resumed(t) for t in trials)


def lost_attempts(trials: list[FrozenTrial]) -> tuple[list[int], list[FrozenTrial]]:
    """Epochs lost by each retried attempt, and the lost attempts never retried."""
    lost, given_up = [], []
    for trial in trials:
        if (trial.state != TrialState.FAIL
                or trial.user_attrs.get(TrialAttr.FAIL_KIND) not in LOST_KINDS):
            continue
        retry = next((t for t in trials if t.number > trial.number
                      and series_of(t) == series_of(trial)), None)
        if retry is None:
            given_up.append(trial)
        else:
            lost.append(reached(trial) - resumed(retry))
    return lost, given_up


def report_chaos(runs: list[Chaos], reference: list[FrozenTrial], reference_wall: float,
                 trials: int) -> None:
    """Print the chaos figures of each mode against the reference run."""
    reference_epochs = epochs_trained(reference)
    print(f"\nreference (no kills): {len(finished(reference))} finished, "
          f"{reference_epochs} epochs, {reference_wall:.0f} s")
    rows = []
    for run in runs:
        final = finished(run.trials)
        kept = all(final.get(number) == record for snapshot in run.snapshots
                   for number, record in snapshot.items())
        lost, given_up = lost_attempts(run.trials)
        total = epochs_trained(run.trials)
        states = {s.name: sum(t.state == s for t in run.trials) for s in TrialState}
        print(f"{run.mode}: states {({k: v for k, v in states.items() if v})}, last run "
              f"exited {run.final_rc}, kills {run.kills}, runs that ended before their "
              f"kill {len(run.early_exits)}, logs with a traceback: "
              f"{', '.join(run.tracebacks) or 'none'}")
        if given_up:
            print(f"  lost attempts given up (not retried): "
                  f"{[(t.number, reached(t) - resumed(t)) for t in given_up]} "
                  "(number, epochs it trained)")
        if any(epochs < 0 for epochs in lost):
            print(f"  NEGATIVE epochs lost: {lost}")
        best = max((t.value for t in run.trials if t.state == TrialState.COMPLETE),
                   default=float("nan"))
        rows.append((run.mode, f"{len(final)} of {trials}" + ("" if len(final) == trials
                                                               else " (WRONG)"),
                     "yes" if kept else "NO", str(len(lost)), str(len(given_up)),
                     str(sum(lost)), f"{sum(lost) / len(lost):.2f}" if lost else "-",
                     str(total), f"{total - reference_epochs:+d}",
                     f"{(total - reference_epochs) / run.kills:+.2f}" if run.kills else "-",
                     f"{best:.4f}", f"{run.wall:.0f}"))
    print("\nEpochs lost: per interrupted attempt, the epochs it completed less the epoch "
          "its retry resumed from (the epoch in progress at the kill is not counted). "
          "Epochs in all: every attempt's own epochs; after the first kill the trials "
          "differ from the reference's (the sampler is seeded by trial number, and "
          "retries take numbers), so the excess over the reference is indicative and "
          "the epochs lost per attempt the direct measure.\n")
    print("| mode | finished | no finished trial lost or changed | interrupted attempts "
          "(retried) | given up | epochs lost | per interrupted attempt | epochs in all | "
          f"vs reference ({reference_epochs}) | per kill | best val_acc | wall (s) |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def run_chaos(args: argparse.Namespace, folder: Path) -> None:
    """The chaos part: reference run, then each mode killed `--kills` times."""
    study_args = ["--arch", "cnn", "--dataset", "digits", "--trials", str(args.trials),
                  "--epochs", str(args.epochs), "--pruner", "none", "--patience",
                  str(args.epochs), "--seed", str(args.seed), "--heartbeat", "1"]
    print(f"chaos: `autodl tune {' '.join(study_args)}`, {args.kills} kills (SIGKILL to "
          f"the process group), rerun {STALE_WAIT} s after each", flush=True)
    start = time.perf_counter()
    launch = time.time()
    subprocess.run(tune_command(folder, "reference", study_args), check=True,
                   capture_output=True, cwd=folder, env=ENV)
    reference_wall = time.perf_counter() - start
    reference = load(folder, "reference")
    startup = min(t.datetime_start.timestamp() for t in reference) - launch
    if args.kill_window:
        window = tuple(args.kill_window)
    else:
        # From the first trial's start, a window whose mean kill moment leaves 60% of the
        # reference's training done by the kills: the last run has work left to do.
        window = (startup, startup + 1.2 * (reference_wall - startup) / args.kills)
    print(f"reference: {reference_wall:.0f} s, first trial started {startup:.1f} s after "
          f"launch; kills {window[0]:.1f} to {window[1]:.1f} s after each launch "
          "(uniform)", flush=True)
    runs = []
    for mode, extra in (("checkpoints (every epoch)", []),
                        ("no checkpoints (--checkpoint-every 0)", ["--checkpoint-every", "0"])):
        print(f"{mode}:", flush=True)
        study = "checkpoints" if not extra else "no-checkpoints"
        # The same kill moments in both modes.
        runs.append(chaos(folder, study, study_args + extra, args.kills, window,
                          random.Random(args.seed)))
        runs[-1].mode = mode
    report_chaos(runs, reference, reference_wall, args.trials)


def run_cost_once(folder: Path, study: str, args: list[str]) -> tuple[float, list, int]:
    """Wall seconds of one run, its trials, and the largest checkpoint file seen."""
    process = run_logged(tune_command(folder, study, args), folder, folder / f"{study}.log")
    checkpoints = folder / "artifacts" / "checkpoints" / study
    start, largest = time.perf_counter(), 0
    # Checkpoints go when their trial ends: their size is read while it runs.
    while process.poll() is None:
        for path in checkpoints.glob("trial-*.npz"):
            try:
                largest = max(largest, path.stat().st_size)
            except FileNotFoundError:
                pass
        time.sleep(0.25)
    wall = time.perf_counter() - start
    if process.returncode:
        sys.exit(f"{study} exited {process.returncode}: see {folder / f'{study}.log'}")
    return wall, load(folder, study), largest


def run_cost(args: argparse.Namespace, folder: Path) -> None:
    """The cost part: seconds per epoch with a checkpoint every epoch and with none."""
    study_args = ["--arch", "cnn", "--dataset", f"idx:{MNIST}", "--trials",
                  str(args.cost_trials), "--epochs", str(args.cost_epochs), "--pruner",
                  "none", "--patience", str(args.cost_epochs), "--seed", str(args.seed)]
    print(f"\ncost: `autodl tune {' '.join(study_args)}`", flush=True)
    time_writes(folder, study_args)
    if not args.cost_repeats:
        return
    print("whole runs with --checkpoint-every 1 and 0, ABBA:", flush=True)
    modes = {"every epoch": "1", "none": "0"}
    order = ["every epoch", "none", "none", "every epoch"][:2 * args.cost_repeats]
    runs: dict[str, list[list[FrozenTrial]]] = {mode: [] for mode in modes}
    largest = 0
    for i, mode in enumerate(order):
        study = f"cost-{modes[mode]}-{i}"
        wall, trials, size = run_cost_once(folder, study,
                                           study_args + ["--checkpoint-every", modes[mode]])
        runs[mode].append(trials)
        largest = max(largest, size)
        spe = sum(t.user_attrs[TrialAttr.TRAIN_SECONDS] for t in trials) / sum(
            t.user_attrs[TrialAttr.STOPPED_EPOCH] for t in trials)
        print(f"  {mode}: {wall:.0f} s, {spe:.2f} s per epoch", flush=True)
    every_run = [run for mode in modes for run in runs[mode]]
    same = all([(t.state, t.params) for t in run] == [(t.state, t.params) for t in every_run[0]]
               for run in every_run)
    if not same or any(t.state != TrialState.COMPLETE for t in every_run[0]):
        print("TRIALS DIFFER between runs, or did not all complete: no pairing")
        return

    def per_epoch(mode: str, number: int) -> tuple[float, int]:
        """A trial's seconds and epochs, summed over the mode's runs."""
        trials = [run[number] for run in runs[mode]]
        return (sum(t.user_attrs[TrialAttr.TRAIN_SECONDS] for t in trials),
                sum(t.user_attrs[TrialAttr.STOPPED_EPOCH] for t in trials))

    print(f"same trials (states, parameters) in all {len(every_run)} runs: yes\n")
    print("| trial | parameters | s/epoch, checkpoint every epoch | s/epoch, none | ratio |")
    print("|---:|---:|---:|---:|---:|")
    ratios, sums = [], {mode: [0.0, 0] for mode in modes}
    for trial in every_run[0]:
        row = []
        for mode in modes:
            seconds, epochs = per_epoch(mode, trial.number)
            sums[mode][0] += seconds
            sums[mode][1] += epochs
            row.append(seconds / epochs)
        ratios.append(row[0] / row[1])
        print(f"| {trial.number} | {trial.user_attrs.get(TrialAttr.PARAMS_COUNT, 0):,} | "
              f"{row[0]:.3f} | {row[1]:.3f} | {ratios[-1]:.3f} |")
    total = (sums["every epoch"][0] / sums["every epoch"][1]) / (sums["none"][0]
                                                                 / sums["none"][1])
    print(f"\nseconds per epoch, checkpoint every epoch / none: median of per-trial ratios "
          f"{statistics.median(ratios):.3f}, ratio of sums {total:.3f} (target <= 1.03)")
    if largest:
        print(f"largest checkpoint file seen: {largest / 2**20:.2f} MiB")


def time_writes(folder: Path, study_args: list[str]) -> None:
    """The checkpoints' cost measured directly: every write timed, in one process.

    Whole runs' epoch times vary from run to run on a shared machine by more than the
    cost sought; here the study runs in this process (``--workers 0``) with the
    checkpoint callback timed, against the epochs' own time in the same run.
    """
    from autodl import checkpoint
    from autodl.cli import main as autodl

    writes: list[float] = []
    saved: list[int] = []
    on_epoch_end = checkpoint.Checkpointer.on_epoch_end
    save = checkpoint.CheckpointStore.save

    def timed(self: checkpoint.Checkpointer, epoch: int, logs: dict | None = None) -> None:
        start, count = time.perf_counter(), len(saved)
        on_epoch_end(self, epoch, logs)
        if len(saved) > count:  # a checkpoint was due: capture and write, both timed
            writes.append(time.perf_counter() - start)

    def counted(self: checkpoint.CheckpointStore, series: int,
                state: checkpoint.Checkpoint) -> None:
        saved.append(series)
        save(self, series, state)

    checkpoint.Checkpointer.on_epoch_end = timed
    checkpoint.CheckpointStore.save = counted
    storage = f"sqlite:///{folder}/timed.db"
    if autodl(["tune", *study_args, "--workers", "0", "--storage", storage,
               "--study", "timed"]) != 0:
        sys.exit("the timed run failed")
    trials = optuna.load_study(study_name="timed", storage=storage).trials
    epochs = [record["seconds"] for trial in trials
              for record in trial.user_attrs[TrialAttr.HISTORY]]
    print(f"\ndirect, one process (`--workers 0`), every write timed: {len(writes)} "
          f"checkpoints written in {len(epochs)} epochs; a write takes "
          f"{statistics.median(writes) * 1000:.0f} ms median, {max(writes) * 1000:.0f} ms "
          f"at most, against {statistics.median(epochs):.2f} s for the median epoch; all "
          f"writes {sum(writes):.2f} s against all epochs {sum(epochs):.1f} s: "
          f"{sum(writes) / sum(epochs):+.2%} (target <= +3%); an epoch that writes one: "
          f"{statistics.mean(writes) / statistics.mean(epochs):+.2%}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--part", choices=["chaos", "cost", "both"], default="both")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--kill-window", type=float, nargs=2, metavar=("FROM", "TO"),
                        help="seconds after a launch between which its kill falls "
                             "(default: from the reference's first trial start, sized "
                             "so the kills leave work to the last run)")
    parser.add_argument("--cost-trials", type=int, default=8)
    parser.add_argument("--cost-epochs", type=int, default=3)
    parser.add_argument("--cost-repeats", type=int, choices=[0, 1, 2], default=2,
                        help="whole runs compared: 1: AB; 2: ABBA; 0: none, only the "
                             "timed writes")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the studies and of the kill moments")
    parser.add_argument("--folder", help="keep the studies and logs here (default: a "
                                         "temporary folder)")
    args = parser.parse_args()
    print(f"machine: {machine()}", flush=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(args.folder or temporary).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        if args.part in ("chaos", "both"):
            run_chaos(args, folder)
        if args.part in ("cost", "both"):
            run_cost(args, folder)


if __name__ == "__main__":
    main()
