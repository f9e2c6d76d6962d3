"""Accuracy against latency: autodl's multi-objective search against a hand-written Optuna study.

    python benchmarks/pareto.py [--dataset idx:../shared/datasets/mnist] [--seeds 2]
        [--trials 40] [--epochs 5] [--columns autodl,autodl-unpruned,optuna-mo]
        [--ablation-seeds N] [--constraint-trials 12] [--max-samples N]
        [--out benchmarks/out]
    python benchmarks/pareto.py --analyse WORK [--merge WORK2] ...   (analysis again)

What a user tuning for deployment compares (issue 15): how soon each tool's Pareto front
of test accuracy against latency is as good as the other's, on the real MNIST images
(the t10k set: 7,200 train / 800 validation / 2,000 test per seed, autodl's split).

* ``autodl``: the real CLI as a user runs it, ``autodl tune --arch cnn --dataset idx:DIR
  --objective accuracy,latency --trials T --epochs E --seed S --storage
  sqlite:///TMP/s.db``, nothing else: its default pruner for several objectives
  (``pareto``: successive halving of accuracy among the trials no slower than each).
* ``autodl-unpruned``: the same command with ``--pruner none``, the ablation that shows
  what the pruning rule cuts and whether it loses front; on the first
  ``--ablation-seeds`` seeds only (all by default).
* ``optuna-mo``: a hand-written Optuna study as a user writes it:
  ``create_study(directions=["maximize", "minimize"], sampler=TPESampler(seed=S))`` (TPE
  is Optuna 5's default multi-objective sampler), no pruner (Optuna cannot prune a
  multi-objective trial), T trials over the KerasTuner tutorial's CNN space (the one of
  ``time_to_accuracy.py``), each trained E epochs with that benchmark's early stopping,
  returning the best ``val_accuracy`` of its epochs (``max(history.history[...])``) and
  its latency timed as such a user times a Keras model: the median of 50 timed
  ``model(x, training=False)`` calls at batch 1 after 10 untimed ones. Each trial's model
  is saved (``model.save``) for the analysis, inside the timed run.

Every column of every seed runs in a fresh process, seeds interleaved ABBA (seed 0:
autodl, autodl-unpruned, optuna-mo; seed 1: the reverse, less the ablation past
``--ablation-seeds``); its clock starts when that process is launched. Every column gets
the same split for a seed, checked by digest.

The analysis runs after the timed runs, untimed, in this one process, so that every
model's latency is measured the same way: each model that could be on a front (autodl:
the trials with a stored model, i.e. on the front when they completed; optuna-mo: every
completed trial) is loaded, scored on the test split, and timed by
``autodl.deployment.measure`` (TFLite, LiteRT at batch 1, one thread) ``--latency-rounds``
times (3), in rounds over all models, its median kept. A column's front
at time t is made of those trials completed by t (``datetime_complete`` since its
process launch).

Hypervolume, in (test accuracy, latency ms), with one reference point for every column
and seed: accuracy ``--ref-accuracy`` (0.90: below it an MNIST model is not worth
deploying, a linear model reaches about 0.92) and 1.1 times the largest latency of any
final front's point (so every point of every final front adds area, the slowest a
sliver, and no column picks its own box). It is written as the fraction of the box
between the reference and the ideal point (accuracy 1, latency 0). Bar (issue 15): per
seed, the time at which autodl's front first reaches optuna-mo's final hypervolume H,
over optuna-mo's wall time W; at most 0.5 averaged over the seeds. The same ratios are
also written, not as the bar, for two other fronts: those each study hands back
(``handed_back_curve``: chosen by the study's own values, so optuna-mo's by its Keras
timing), and those chosen by validation accuracy with every model timed alike
(``timed_alike_curve``: the analysis's TFLite latency, no test score in the choice).

The pruning rule is checked twice: live (autodl against autodl-unpruned, whose samplers
drift apart once a trial is pruned), and on identical trials, by replaying autodl's
``pareto`` pruner trial by trial on the unpruned study's recorded histories (epochs it
would cut; whether any trial of that study's validation front would be cut), as shipped
and in the variants of ``RULE_VARIANTS`` (no noise margin; rungs at epochs 1 and 3; no
floor of use). A front trial cut loses hypervolume only if it is above the reference
accuracy (the bar counts those; the table names every one).

Constraint cost: ``autodl tune ... --objective accuracy,latency --max-latency X --trials
N --epochs 1`` and the same with ``--max-params P``, X and P the 25th percentile of the
latencies and parameter counts of the unpruned column's trials (so most trials are over
them). For each trial pruned before training: its ``datetime_complete`` minus its
``datetime_start``, and the gap to the next trial's start; their sum is what it cost
the study (bar: under 1 s).

Epochs: 5 by default, the fewest issue 15 allows; the whole run should take about 75
minutes on the 2-core benchmark box. One epoch of these CNNs there takes 1.4 s (tutorial
CNN: 1 block, 16 filters, batch 128) to 28 s (autodl's cnn at depth 3, 64 filters,
batch 16); at 40 trials of 5 epochs the columns took (2026-12-03) 380-512 s (autodl),
654 s (autodl-unpruned) and 682-835 s (optuna-mo) per seed: about 65 minutes for every
column on two seeds with the constraint runs, plus 5 for the analysis. 10 epochs would
double the training, about 2 hours.

Writes ``pareto.md`` (tables), ``pareto.png`` (hypervolume against wall-clock seconds,
and the final fronts) and ``pareto.json`` (every run and trial) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common
from time_to_accuracy import (
    DEFAULT_DATASET,
    WARM_UP,
    build_cnn,
    early_stopping,
    make_split,
    mean_spread,
    resolve_dataset,
    split_digest,
    split_sizes,
    suggest_cnn,
    test_accuracy,
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

OBJECTIVES = "accuracy,latency"
#: autodl as shipped, and the ablation without its pruning rule.
AUTODL_COLUMNS = {"autodl": [], "autodl-unpruned": ["--pruner", "none"]}
BASELINE = "optuna-mo"
COLUMNS = (*AUTODL_COLUMNS, BASELINE)
#: The bar: autodl reaches the baseline's final hypervolume in this share of its time.
BAR_RATIO = 0.5
#: A constraint pruned before training costs the study less than this, in seconds.
BAR_CONSTRAINT_SECONDS = 1.0
REF_ACCURACY = 0.90
#: The reference latency over the slowest point of any final front.
REF_LATENCY_MARGIN = 1.1
#: The hand-written column's Keras latency: untimed calls, then timed ones.
USER_WARM_UP_CALLS, USER_TIMED_CALLS = 10, 50
#: Constraint runs' limits: this quantile of the unpruned column's trials' measures.
CONSTRAINT_QUANTILE = 0.25
#: Limits when no unpruned run measured any (e.g. ``--columns optuna-mo``).
FALLBACK_LIMITS = {"--max-latency": 0.1, "--max-params": 50_000}
LIMIT_ATTRS = {"--max-latency": "latency_ms", "--max-params": "params_count"}
#: The analysis times every model this many times, in rounds over all models.
LATENCY_ROUNDS = 3
#: Relative slack when asking whether a hypervolume reached another (float sums).
REACH_TOLERANCE = 1e-9


# --- Hypervolume and fronts ---------------------------------------------------------------


def hypervolume(points, reference: tuple[float, float]) -> float:
    """Area dominated by ``points`` (accuracy up, latency down) up to ``reference``.

    ``points`` are ``(accuracy, latency)``; the reference is ``(accuracy, latency)``
    too, and a point not better than it on both counts adds nothing. A sweep in
    increasing latency: between one point's latency and the next, the area's height is
    the best accuracy of the points at most that slow.
    """
    ref_accuracy, ref_latency = reference
    inside = sorted((latency, accuracy) for accuracy, latency in points
                    if accuracy > ref_accuracy and latency < ref_latency)
    area, best = 0.0, ref_accuracy
    for index, (latency, accuracy) in enumerate(inside):
        best = max(best, accuracy)
        following = inside[index + 1][0] if index + 1 < len(inside) else ref_latency
        area += (following - latency) * (best - ref_accuracy)
    return area


def normalised_hypervolume(points, reference: tuple[float, float]) -> float:
    """The hypervolume as a share of the box from the reference to (accuracy 1, latency 0)."""
    ref_accuracy, ref_latency = reference
    return hypervolume(points, reference) / ((1.0 - ref_accuracy) * ref_latency)


def front_indices(points) -> list[int]:
    """Indices of the ``(accuracy, latency)`` points no other point beats on both counts."""
    def beats(a, b):
        return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])

    return [i for i, point in enumerate(points)
            if not any(beats(other, point) for other in points)]


def analysed(run: dict) -> list[dict]:
    """A run's trials measured by the analysis (test accuracy and TFLite latency)."""
    return [trial for trial in run["trials"] if trial.get("test") is not None]


def final_front(run: dict) -> list[dict]:
    """A run's final front in (test accuracy, TFLite latency), fastest first."""
    trials = analysed(run)
    points = [(trial["test"], trial["tflite_ms"]) for trial in trials]
    return sorted((trials[i] for i in front_indices(points)), key=lambda t: t["tflite_ms"])


def hypervolume_curve(run: dict, reference) -> list[tuple[float, float]]:
    """(seconds since launch, hypervolume of the trials completed by then), per completion."""
    points, curve = [], [(0.0, 0.0)]
    for trial in sorted(analysed(run), key=lambda t: t["complete"]):
        points.append((trial["test"], trial["tflite_ms"]))
        curve.append((trial["complete"], normalised_hypervolume(points, reference)))
    return curve


def validation_front_curve(trials: list[dict], reference, latency) -> list[tuple[float, float]]:
    """(seconds since launch, hypervolume of a front chosen without the test split), per completion.

    At each completion the front is of ``trials`` completed by then, chosen by validation
    accuracy and ``latency(trial)``; each member is scored like every front (test
    accuracy, the analysis's TFLite latency). A member without a scored model adds nothing.
    """
    done = sorted(trials, key=lambda t: t["complete"])
    curve, seen = [(0.0, 0.0)], []
    for trial in done:
        seen.append(trial)
        front = [seen[i] for i in front_indices([(t["values"][0], latency(t)) for t in seen])]
        points = [(t["test"], t["tflite_ms"]) for t in front if t.get("test") is not None]
        curve.append((trial["complete"], normalised_hypervolume(points, reference)))
    return curve


def handed_back_curve(run: dict, reference) -> list[tuple[float, float]]:
    """The hypervolume of the front a user of the tool is handed, over time.

    Chosen by the study's own values: validation accuracy and the latency the tool
    measured itself (autodl's TFLite timing in the trial, the hand-written study's Keras
    calls).
    """
    done = [trial for trial in run["trials"]
            if trial["state"] == "COMPLETE" and trial["values"]]
    return validation_front_curve(done, reference, lambda trial: trial["values"][1])


def timed_alike_curve(run: dict, reference) -> list[tuple[float, float]]:
    """The hypervolume of the front chosen by validation accuracy and the analysis's latency.

    Every scored model timed alike, and no test score in the choice: between the bar's
    (optuna-mo's best models by test accuracy) and the handed-back fronts (optuna-mo's
    chosen by its noisy Keras timing).
    """
    return validation_front_curve(analysed(run), reference, lambda trial: trial["tflite_ms"])


def reached_at(curve, target: float) -> float | None:
    """The first second at which the curve reaches ``target``; ``None`` if it never does."""
    return next((seconds for seconds, value in curve
                 if value >= target * (1 - REACH_TOLERANCE)), None)


def reference_point(runs: list[dict], ref_accuracy: float) -> tuple[float, float]:
    """One reference for all: ``ref_accuracy``, 1.1x the slowest final front's point."""
    slowest = max((trial["tflite_ms"] for run in runs for trial in final_front(run)),
                  default=1.0)
    return ref_accuracy, REF_LATENCY_MARGIN * slowest


# --- The timed columns (each in its own process) ------------------------------------------


def tune(args: argparse.Namespace, folder: Path, seed: int, trials: int, epochs: int,
         options: list[str]) -> tuple[dict, subprocess.CompletedProcess]:
    """Run the real ``autodl tune`` CLI, its study left in ``folder``; exit if it fails.

    Returns:
        The run's ``storage`` and ``command`` (as a user types it), and the process.
    """
    program = _common.autodl_program()
    storage = f"sqlite:///{folder}/s.db"
    command = [*program, "tune", "--arch", "cnn", "--dataset", args.dataset, "--objective",
               OBJECTIVES, "--trials", str(trials), "--epochs", str(epochs),
               "--seed", str(seed), "--storage", storage, *options]
    if args.max_samples:
        command += ["--max-samples", str(args.max_samples)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=folder)
    if done.returncode != 0:
        sys.exit(f"{shlex.join(command)} failed ({done.returncode}):\n"
                 f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    shown = shlex.join(["autodl", *command[len(program):]]).replace(str(folder), "<tmp>")
    return {"storage": storage, "command": shown}, done


def run_autodl(args: argparse.Namespace, seed: int, t0: float, options: list[str],
               folder: Path) -> dict:
    """The real ``autodl tune`` CLI, its study left in ``folder`` for the analysis."""
    run, done = tune(args, folder, seed, args.trials, args.epochs, options)
    return {"wall": time.time() - t0, **run, "output_tail": done.stdout[-1500:]}


def keras_latency_ms(model, x) -> float:
    """As a user times a Keras model: the median of timed calls at batch 1, after a warm-up."""
    for _ in range(USER_WARM_UP_CALLS):
        model(x, training=False)
    times = []
    for _ in range(USER_TIMED_CALLS):
        start = time.perf_counter()
        model(x, training=False)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def run_optuna_mo(args: argparse.Namespace, seed: int, t0: float, folder: Path) -> dict:
    """The hand-written multi-objective Optuna study; every trial's model saved in ``folder``."""
    import keras
    import optuna

    splits = make_split(args.dataset, args.max_samples, seed)
    keras.utils.set_random_seed(seed)
    one = splits.x_val[:1]

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        keras.backend.clear_session()
        values, batch_size = suggest_cnn(trial)
        model = build_cnn(values, splits.input_shape, splits.num_classes)
        history = model.fit(splits.x_train, splits.y_train,
                            validation_data=(splits.x_val, splits.y_val),
                            batch_size=batch_size, epochs=args.epochs, verbose=0,
                            callbacks=[early_stopping()])
        scores = history.history["val_accuracy"]
        latency = keras_latency_ms(model, one)
        model.save(folder / f"trial-{trial.number}.keras")
        trial.set_user_attr("epochs", len(scores))
        return max(scores), latency

    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=args.trials)
    wall = time.time() - t0
    trials = []
    for trial in study.trials:
        complete = trial.state == optuna.trial.TrialState.COMPLETE
        trials.append({
            "number": trial.number, "state": trial.state.name,
            "values": list(trial.values) if complete else None,
            "start": trial.datetime_start.timestamp() - t0,
            "complete": trial.datetime_complete.timestamp() - t0,
            "epochs": trial.user_attrs.get("epochs", 0),
            "model": str(folder / f"trial-{trial.number}.keras") if complete else None,
        })
    return {"wall": wall, "trials": trials, "split": split_digest(splits),
            "sizes": split_sizes(splits)}


def run_column(column: str, seed: int, t0: float, args: argparse.Namespace) -> dict:
    """One column's search for one seed, in this (fresh) process."""
    folder = Path(args.folder)
    if column in AUTODL_COLUMNS:
        result = run_autodl(args, seed, t0, AUTODL_COLUMNS[column], folder)
    else:
        result = run_optuna_mo(args, seed, t0, folder)
    result.update(column=column, seed=seed, t0=t0, folder=str(folder))
    return result


# --- The analysis (untimed, one process) --------------------------------------------------


def read_autodl_trials(study, t0: float) -> list[dict]:
    """autodl's trials as the analysis needs them, with their times since launch."""
    from autodl.storage import TrialAttr

    trials = []
    for trial in study.get_trials(deepcopy=False):
        attrs = trial.user_attrs
        history = attrs.get(TrialAttr.HISTORY) or []
        complete = trial.datetime_complete
        trials.append({
            "number": trial.number, "state": trial.state.name,
            "values": list(trial.values) if trial.values else None,
            "start": trial.datetime_start.timestamp() - t0,
            "complete": complete.timestamp() - t0 if complete else None,
            "epochs": len(history), "history": history,
            "latency_ms": attrs.get(TrialAttr.LATENCY_MS),
            "params_count": attrs.get(TrialAttr.PARAMS_COUNT),
            "stopped_epoch": attrs.get(TrialAttr.STOPPED_EPOCH),
            "pruned_because": attrs.get(TrialAttr.PRUNED_BECAUSE),
            "model": TrialAttr.MODEL_ARTIFACT in attrs,
        })
    return trials


def load_autodl_study(storage: str):
    """The one study in an autodl run's storage."""
    import optuna

    (name,) = optuna.study.get_all_study_names(storage)
    return optuna.load_study(study_name=name, storage=storage)


def model_loader(run: dict):
    """A function that loads a trial's model of ``run`` (autodl: from its study's store)."""
    import keras

    from autodl import storage

    if run["column"] not in AUTODL_COLUMNS:
        return lambda trial: keras.models.load_model(trial["model"])
    study = load_autodl_study(run["storage"])
    frozen = {trial.number: trial for trial in study.get_trials(deepcopy=False)}
    return lambda trial: storage.load_trial_model(study, frozen[trial["number"]],
                                                  run["storage"])


def analyse_run(run: dict, args: argparse.Namespace, splits_by_seed: dict) -> None:
    """Score every model of ``run`` that could be on a front; note its split's digest."""
    import keras

    from autodl import storage
    from autodl.deployment import measure

    seed = run["seed"]
    if seed not in splits_by_seed:
        splits_by_seed[seed] = make_split(args.dataset, args.max_samples, seed)
    splits = splits_by_seed[seed]
    if run["column"] in AUTODL_COLUMNS:
        study = load_autodl_study(run["storage"])
        run["trials"] = read_autodl_trials(study, run["t0"])
        own = storage.study_splits(study)  # the split autodl's recorded facts make
        run.update(split=split_digest(own), sizes=split_sizes(own))
        run["front_test_recorded"] = {str(k): v for k, v in
                                      storage.recorded_front_test(study).items()}
    load = model_loader(run)
    for trial in run["trials"]:
        if trial["state"] != "COMPLETE" or not trial["model"]:
            continue
        keras.backend.clear_session()
        model = load(trial)
        deployment = measure(model)
        trial["test"] = test_accuracy(model, splits)
        trial["tflite_rounds"] = [deployment.latency_ms]
        run["runtime"] = deployment.runtime


def time_again(runs: list[dict], rounds: int) -> None:
    """Time every scored model ``rounds`` times in all; its latency is the median.

    On a shared machine one timing of a 0.05 ms model moves by tens of percent with the
    load of the moment, enough to move a front and the bar (a first analysis of the same
    runs put seed 0's ratio at 0.44, a second at never). Each round goes over every
    model of every run, in alternating order, so a slow spell is shared by all columns.
    """
    import keras

    from autodl.deployment import measure

    for index in range(1, rounds):
        for run in (runs if index % 2 == 0 else runs[::-1]):
            load = model_loader(run)
            for trial in analysed(run):
                keras.backend.clear_session()
                trial["tflite_rounds"].append(measure(load(trial)).latency_ms)
    for run in runs:
        for trial in analysed(run):
            trial["tflite_ms"] = statistics.median(trial["tflite_rounds"])


#: Variants of the rule replayed beside it: the pruner's attributes they replace.
RULE_VARIANTS = ({"noise_margin": 0.0}, {"rungs": (1, 3)}, {"useful_share": 0.0})


def replay_pruning(run: dict, epochs: int, ref_accuracy: float, validation_labels,
                   variant: dict | None = None) -> dict:
    """autodl's ``pareto`` pruner applied, trial by trial, to an unpruned run's histories.

    The unpruned study ran its trials one after another, so trial k's competitors at an
    epoch are trials 0..k-1 as the replay left them (cut short where it cut them).
    ``validation_labels`` are the run's split's; ``variant`` (one of ``RULE_VARIANTS``)
    replaces some of the pruner's attributes: ``noise_margin`` 0 is the rule without its
    margin, ``rungs`` (1, 3) its rungs before they counted back from the full training,
    ``useful_share`` 0 the rule before cheap trials had to be of use.
    """
    from optuna.trial import TrialState

    from autodl.pruners import PRUNERS
    from autodl.storage import TrialAttr

    pruner = PRUNERS["pareto"](epochs, tuple(OBJECTIVES.split(",")), validation_labels,
                               len(run["trials"]))
    for name, value in (variant or {}).items():
        setattr(pruner, name, value)

    class Replayed:  # what the pruner reads of a trial
        def __init__(self, number, state, history, latency):
            self.number, self.state = number, state
            self.user_attrs = {TrialAttr.HISTORY: history, TrialAttr.LATENCY_MS: latency}

    class Study:  # what the pruner reads of a study
        def __init__(self):
            self.trials: list[Replayed] = []

        def get_trials(self, deepcopy=False, states=None):
            return [t for t in self.trials if states is None or t.state in states]

    study, cut, full_points, kept_points = Study(), {}, {}, {}
    for trial in sorted(run["trials"], key=lambda t: t["number"]):
        history, latency = trial.get("history") or [], trial.get("latency_ms")
        if trial["state"] != "COMPLETE" or not history or latency is None:
            continue
        stop = None
        for epoch in range(1, len(history) + 1):
            if pruner.prune(study, Replayed(trial["number"], TrialState.RUNNING,
                                            history[:epoch], latency)):
                stop = epoch
                break
        full_points[trial["number"]] = (trial["values"][0], latency)
        if stop is None:
            kept_points[trial["number"]] = full_points[trial["number"]]
        else:
            cut[trial["number"]] = stop
        study.trials.append(Replayed(trial["number"],
                                     TrialState.PRUNED if stop else TrialState.COMPLETE,
                                     history[:stop] if stop else history, latency))
    numbers = list(full_points)
    front = [numbers[i] for i in front_indices([full_points[n] for n in numbers])]
    slowest = max((full_points[n][1] for n in front), default=1.0)
    reference = (ref_accuracy, REF_LATENCY_MARGIN * slowest)
    trained = {t["number"]: t["epochs"] for t in run["trials"]}
    return {"seed": run["seed"], "trials": len(full_points), "cut": len(cut),
            "rule": "as shipped" if not variant else ", ".join(
                f"{name.replace('_', ' ')} {value}" for name, value in variant.items()),
            "noise_margin": pruner.noise_margin, "rungs": list(pruner.rungs),
            "useful_share": pruner.useful_share,
            "epochs": sum(trained[n] for n in full_points),
            "epochs_replayed": sum(cut.get(n, trained[n]) for n in full_points),
            "front": front, "front_cut": sorted(n for n in front if n in cut),
            # What a cut costs the hypervolume: front trials above the reference accuracy.
            "front_cut_counted": sorted(n for n in front
                                        if n in cut and full_points[n][0] > ref_accuracy),
            "hv_val": normalised_hypervolume(full_points.values(), reference),
            "hv_val_replayed": normalised_hypervolume(kept_points.values(), reference)}


# --- Constraint cost -----------------------------------------------------------------------


def constraint_limits(runs: list[dict]) -> dict[str, float]:
    """The limits of the constraint runs: a low quantile of the unpruned trials' measures."""
    limits = {}
    for option, attr in LIMIT_ATTRS.items():
        measured = sorted(trial[attr] for run in runs if run["column"] == "autodl-unpruned"
                          for trial in run.get("trials", []) if trial.get(attr) is not None)
        if len(measured) >= 4:
            value = statistics.quantiles(measured, n=int(1 / CONSTRAINT_QUANTILE))[0]
            limits[option] = round(value, 4) if option == "--max-latency" else int(value)
        else:
            limits[option] = FALLBACK_LIMITS[option]
    return limits


def run_constraint(args: argparse.Namespace, option: str, limit: float, folder: Path) -> dict:
    """``autodl tune`` with one deployment limit, from a fresh process; its study's timing."""
    folder.mkdir(parents=True, exist_ok=True)
    started = time.time()
    run, _ = tune(args, folder, args.first_seed, args.constraint_trials, 1,
                  [option, f"{limit:g}"])
    return {"option": option, "limit": limit, **run, "wall": time.time() - started,
            "t0": started}


def constraint_costs(result: dict) -> None:
    """Each trial pruned before training: its own seconds, and the gap to the next start."""
    trials = sorted((t for t in read_autodl_trials(load_autodl_study(result["storage"]),
                                                   result["t0"]) if t["complete"] is not None),
                    key=lambda t: t["start"])
    costs = []
    for index, trial in enumerate(trials):
        if trial["state"] != "PRUNED" or trial["stopped_epoch"] != 0 or trial["epochs"]:
            continue
        own = trial["complete"] - trial["start"]
        gap = trials[index + 1]["start"] - trial["complete"] if index + 1 < len(trials) else None
        costs.append({"number": trial["number"], "own": own, "gap": gap,
                      "total": own + (gap or 0.0), "because": trial["pruned_because"]})
    result.update(trials=len(trials), trained=sum(t["epochs"] > 0 for t in trials),
                  costs=costs)


# --- Report ---------------------------------------------------------------------------------


def run_summary(run: dict, reference) -> dict:
    """The per-run figures of the tables."""
    trials = run["trials"]
    front = final_front(run)
    tests = [t["test"] for t in analysed(run)]
    return {"wall": run["wall"], "trials": len(trials),
            "pruned": sum(t["state"] == "PRUNED" for t in trials),
            "failed": sum(t["state"] == "FAIL" for t in trials),
            "epochs": sum(t["epochs"] for t in trials),
            "hv": normalised_hypervolume([(t["test"], t["tflite_ms"]) for t in front],
                                         reference),
            "front": len(front), "best_test": max(tests) if tests else None,
            "scored": len(tests)}


def seed_ratios(runs: list[dict], reference, curve=hypervolume_curve) -> list[dict]:
    """Per seed: the baseline's final H and wall W; when each autodl column reached H.

    ``curve`` makes a run's hypervolume over time: of every scored model by default
    (the bar's), ``handed_back_curve`` or ``timed_alike_curve``.
    """
    rows = []
    for seed in sorted({run["seed"] for run in runs}):
        base = next((r for r in runs if r["seed"] == seed and r["column"] == BASELINE), None)
        if base is None:
            continue
        base_curve = curve(base, reference)
        target = base_curve[-1][1]
        row = {"seed": seed, "H": target, "W": base["wall"],
               "baseline_reached": reached_at(base_curve, target)}
        for column in AUTODL_COLUMNS:
            run = next((r for r in runs if r["seed"] == seed and r["column"] == column), None)
            if run is None:
                continue
            own = curve(run, reference)
            at = reached_at(own, target) if target > 0 else None
            row[column] = {"at": at, "ratio": at / base["wall"] if at is not None else None,
                           "final_hv": own[-1][1], "wall": run["wall"]}
        rows.append(row)
    return rows


def front_cut_cell(replay: dict, ref_accuracy: float) -> str:
    """The front trials a replayed rule cut, and how many of them were above the reference."""
    if not replay["front_cut"]:
        return "none"
    return (f"{', '.join(map(str, replay['front_cut']))} "
            f"({len(replay['front_cut_counted'])} above {ref_accuracy:g})")


def ratio_table(rows: list[dict]) -> list[str]:
    """The lines of a per-seed table of ``seed_ratios`` rows."""
    lines = ["| seed | optuna-mo H | optuna-mo W s | optuna-mo's own H at s "
             "| autodl reaches H at (/ W) | autodl-unpruned reaches H at (/ W) |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        own = f"{row['baseline_reached']:.0f}" if row["baseline_reached"] is not None else "–"
        lines.append(f"| {row['seed']} | {row['H']:.4f} | {row['W']:.0f} | {own} "
                     f"| {ratio_cell(row.get('autodl'))} "
                     f"| {ratio_cell(row.get('autodl-unpruned'))} |")
    return lines


def ratio_cell(entry: dict | None) -> str:
    if entry is None:
        return "–"
    if entry["ratio"] is None:
        return f"never (final {entry['final_hv']:.4f}; ≥ {entry['wall']:.0f} s)"
    return f"{entry['at']:.0f} s = **{entry['ratio']:.2f}**"


def mean_ratio(rows: list[dict], column: str) -> tuple[float | None, int]:
    """The mean ratio over seeds, and how many seeds never reached H."""
    ratios = [row[column]["ratio"] for row in rows if column in row]
    missing = sum(r is None for r in ratios)
    found = [r for r in ratios if r is not None]
    return (statistics.mean(found) if found and not missing else None), missing


def constraint_table(constraints: list[dict]) -> tuple[str, list[float]]:
    """The constraint cost table, and every pruned-before-training trial's total cost."""
    lines = ["| limit | trials | pruned before training | trained | own s: median / max "
             "| gap to next start s: median / max | study s: median / max |",
             "|---|---|---|---|---|---|---|"]
    totals = []
    for result in constraints:
        costs = result["costs"]
        totals += [c["total"] for c in costs]

        def cell(key, costs=costs):
            values = [c[key] for c in costs if c[key] is not None]
            return (f"{statistics.median(values):.2f} / {max(values):.2f}" if values
                    else "–")

        lines.append(f"| `{result['option']} {result['limit']:g}` | {result['trials']} "
                     f"| {len(costs)} | {result['trained']} | {cell('own')} | {cell('gap')} "
                     f"| {cell('total')} |")
    return "\n".join(lines), totals


def report(args, runs: list[dict], columns: list[str], replays: list[dict],
           constraints: list[dict], reference, command: str, whole: float) -> str:
    """The Markdown file's text."""
    seeds = sorted({run["seed"] for run in runs})
    digests = {seed: {run["split"] for run in runs if run["seed"] == seed} for seed in seeds}
    same = all(len(found) == 1 for found in digests.values())
    commands = sorted({run["command"].replace(f"--seed {run['seed']}", "--seed S")
                       for run in runs if "command" in run})
    runtime = next((run["runtime"] for run in runs if run.get("runtime")), "?")
    train, val, test = runs[0]["sizes"]
    notes = [
        f"Command: `{command}` ({whole / 60:.1f} min in all)",
        f"Machine: {_common.machine()}",
        f"Data: `{args.dataset}`"
        + (f", at most {args.max_samples} samples" if args.max_samples else "")
        + f"; {args.trials} trials, at most {args.epochs} epochs each; seeds "
        f"{', '.join(map(str, seeds))}, columns interleaved ABBA; {train:,} training, "
        f"{val:,} validation, {test:,} test images.",
        "Split: " + ("identical in every column for each seed (digest)" if same else
                     f"**DIFFERS between columns**: {digests}") + ".",
        *(f"autodl ran as `{c}`." for c in commands),
        f"Hypervolume: of (test accuracy, latency) with the reference accuracy "
        f"{reference[0]:g} and latency {reference[1]:.4f} ms (1.1x the slowest final front "
        f"point of any run), as a share of the box up to accuracy 1 and latency 0. Latency: "
        f"TFLite at batch 1, {runtime}, measured after the runs in one process. Front at t: "
        "the scored trials completed t seconds after the column's process was launched "
        "(autodl: trials with a stored model; optuna-mo: all completed trials).",
    ]
    own = [(t["values"][1], t["tflite_ms"]) for run in runs if run["column"] == BASELINE
           for t in analysed(run)]
    if own:
        notes.append(f"optuna-mo timed its models itself (Keras calls at batch 1): median "
                     f"{statistics.median(k for k, _ in own):.3f} ms, against "
                     f"{statistics.median(t for _, t in own):.3f} ms for the same models in "
                     "TFLite; its study's own front was chosen by its own figure (the "
                     "fronts each study hands back, below).")
    spreads = sorted(max(t["tflite_rounds"]) / min(t["tflite_rounds"]) - 1 for run in runs
                     for t in analysed(run) if len(t.get("tflite_rounds", [])) > 1)
    if spreads:
        rounds = len(analysed(runs[0])[0]["tflite_rounds"]) if analysed(runs[0]) else "?"
        notes.append(f"Each model was timed {rounds} times, in rounds over all models (its "
                     "median counts): its slowest round was "
                     f"{100 * statistics.median(spreads):.0f}% over its fastest in the median, "
                     f"{100 * spreads[int(0.9 * (len(spreads) - 1))]:.0f}% at the 90th "
                     "percentile.")
    summaries = {id(run): run_summary(run, reference) for run in runs}
    lines = ["| column | wall s | trials | pruned | epochs trained | final hypervolume "
             "| front size | best test acc % | models scored |",
             "|---|---|---|---|---|---|---|---|---|"]
    for column in columns:
        mine = [summaries[id(run)] for run in runs if run["column"] == column]
        if not mine:
            continue

        def cell(key, digits, scale=1.0, mine=mine):
            return mean_spread([s[key] for s in mine], digits, scale)

        lines.append(f"| {column} | {cell('wall', 0)} | {cell('trials', 1)} "
                     f"| {cell('pruned', 1)} | {cell('epochs', 0)} | {cell('hv', 4)} "
                     f"| {cell('front', 1)} | {cell('best_test', 2, 100)} "
                     f"| {cell('scored', 1)} |")
    per_run = ["| column | seed | wall s | trials | pruned | failed | epochs | hypervolume "
               "| front | best test acc % |", "|---|---|---|---|---|---|---|---|---|---|"]
    for run in sorted(runs, key=lambda r: (r["column"], r["seed"])):
        s = summaries[id(run)]
        best = f"{100 * s['best_test']:.2f}" if s["best_test"] is not None else "–"
        per_run.append(f"| {run['column']} | {run['seed']} | {s['wall']:.0f} | {s['trials']} "
                       f"| {s['pruned']} | {s['failed']} | {s['epochs']} | {s['hv']:.4f} "
                       f"| {s['front']} | {best} |")
    rows = seed_ratios(runs, reference)
    ratios = ratio_table(rows)
    handed_back = ratio_table(seed_ratios(runs, reference, handed_back_curve))
    timed_alike = ratio_table(seed_ratios(runs, reference, timed_alike_curve))
    bars = ["| bar | measured | |", "|---|---|---|"]
    if rows and any("autodl" in row for row in rows):
        mean, missing = mean_ratio(rows, "autodl")
        per = "; ".join(f"seed {row['seed']}: "
                        + (f"{row['autodl']['ratio']:.2f}" if row["autodl"]["ratio"] is not None
                           else "never") for row in rows if "autodl" in row)
        measured = (f"{mean:.2f} ({per})" if mean is not None
                    else f"not reached on {missing} seed(s) ({per})")
        verdict = "met" if mean is not None and mean <= BAR_RATIO else "**missed**"
        bars.append(f"| autodl reaches optuna-mo's final hypervolume in ≤ {BAR_RATIO}x its "
                    f"wall time (mean of seeds) | {measured} | {verdict} |")
    table, totals = constraint_table(constraints)
    if totals:
        verdict = "met" if max(totals) < BAR_CONSTRAINT_SECONDS else "**missed**"
        bars.append(f"| a constraint pruned before training costs < "
                    f"{BAR_CONSTRAINT_SECONDS:g} s of the study's time | median "
                    f"{statistics.median(totals):.2f} s, max {max(totals):.2f} s "
                    f"({len(totals)} trials) | {verdict} |")
    shipped = [r for r in replays if r["rule"] == "as shipped"]
    if shipped:
        cut_front = sum(len(r["front_cut"]) for r in shipped)
        counted = sum(len(r["front_cut_counted"]) for r in shipped)
        epochs, kept = sum(r["epochs"] for r in shipped), sum(r["epochs_replayed"] for r in shipped)
        verdict = "met" if counted == 0 and kept < epochs else "**missed**"
        bars.append(f"| the pruning rule cuts epochs without losing the front (replayed on "
                    f"the unpruned studies) | {epochs - kept} of {epochs} epochs cut; "
                    f"{counted} front trial(s) above accuracy {reference[0]:g} cut "
                    f"({cut_front} in all) | {verdict} |")
    replay_lines = ["| rule | seed | trials | cut | epochs trained | after the cuts "
                    "| validation front | front trials cut | val hypervolume: all / kept |",
                    "|---|---|---|---|---|---|---|---|---|"]
    for r in replays:
        settings = (f" (noise margin {r['noise_margin']:g}, rungs {r['rungs']}, useful "
                    f"share {r['useful_share']:g})"
                    if r["rule"] == "as shipped" else "")
        replay_lines.append(
            f"| {r['rule']}{settings} | {r['seed']} | {r['trials']} | {r['cut']} "
            f"| {r['epochs']} "
            f"| {r['epochs_replayed']} | {', '.join(map(str, r['front']))} "
            f"| {front_cut_cell(r, reference[0])} "
            f"| {r['hv_val']:.4f} / {r['hv_val_replayed']:.4f} |")
    text = ("# Accuracy against latency (issue 15)\n\n" + "\n\n".join(notes)
            + "\n\n## Bars\n\n" + "\n".join(bars)
            + "\n\n## Per seed: time to optuna-mo's final hypervolume\n\n" + "\n".join(ratios)
            + "\n\n## Per seed: the fronts each study hands back\n\nNot the bar: each "
            "study's own front at t, chosen by its own values (validation accuracy; autodl's "
            "in-trial TFLite latency, optuna-mo's Keras calls), scored like the others. "
            "What a user of each tool is handed, where the bar above credits optuna-mo with "
            "its best models by the analysis's measures.\n\n" + "\n".join(handed_back)
            + "\n\n## Per seed: the fronts chosen by validation accuracy, timed alike\n\n"
            "Not the bar: each study's front at t chosen by validation accuracy and the "
            "analysis's TFLite latency (every model timed alike, no test score in the "
            "choice), scored like the others.\n\n" + "\n".join(timed_alike)
            + "\n\n## Per column (mean ± standard deviation over seeds)\n\n" + "\n".join(lines)
            + "\n\n![hypervolume against wall-clock seconds; final fronts](pareto.png)"
            + "\n\n## Per run\n\n" + "\n".join(per_run))
    if replays:
        text += ("\n\n## The pruning rule replayed on the unpruned studies\n\n"
                 "autodl's `pareto` pruner run over autodl-unpruned's recorded trials in "
                 "order (validation accuracy and recorded latency, the values it judges "
                 f"by; reference {reference[0]:g} and 1.1x that front's slowest point). "
                 "Cut: trials it would prune (at their last epoch, nothing is saved).\n\n"
                 + "\n".join(replay_lines))
    if constraints:
        text += ("\n\n## Constraint cost\n\nPer trial pruned before training: own = its "
                 "`datetime_complete - datetime_start`; gap = from then to the next "
                 "trial's start; study = their sum.\n\n" + table
                 + "\n\n" + "\n".join(f"- `{c['command']}` ({c['wall']:.0f} s)"
                                      for c in constraints))
    return text + "\n"


def plot(runs: list[dict], columns: list[str], reference, title: str, path: Path) -> None:
    """Hypervolume against wall-clock seconds, and every run's final front."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (curves, fronts) = plt.subplots(1, 2, figsize=(13, 5), dpi=90)
    styles = ["-", "--", ":", "-."]
    seeds = sorted({run["seed"] for run in runs})
    for index, column in enumerate(columns):
        for run in (r for r in runs if r["column"] == column):
            style = styles[seeds.index(run["seed"]) % len(styles)]
            label = f"{column}, seed {run['seed']}"
            seconds, values = zip(*hypervolume_curve(run, reference), strict=True)
            # Held flat until the column's process ended.
            curves.step([*seconds, run["wall"]], [*values, values[-1]], where="post",
                        color=f"C{index}", linestyle=style, linewidth=1.2, label=label)
            curves.plot([run["wall"]], [values[-1]], marker="o", color=f"C{index}",
                        markersize=4)
            front = final_front(run)
            if front:
                latency = [t["tflite_ms"] for t in front]
                accuracy = [t["test"] for t in front]
                fronts.step(latency, accuracy, where="post", color=f"C{index}",
                            linestyle=style, linewidth=1.0, label=label)
                fronts.plot(latency, accuracy, "o", color=f"C{index}", markersize=3)
    curves.set(xlabel="wall-clock seconds since the tool was started (dot: it ended)",
               ylabel="hypervolume (share of the reference box)", title=title)
    fronts.axvline(reference[1], color="grey", linestyle=":", linewidth=0.8)
    fronts.axhline(reference[0], color="grey", linestyle=":", linewidth=0.8)
    fronts.set(xlabel="TFLite latency at batch 1, ms", ylabel="test accuracy",
               title="final fronts (dotted: reference point)",
               ylim=(max(reference[0] - 0.01, 0.0), 1.0))
    for axes in (curves, fronts):
        axes.grid(alpha=0.3)
        axes.legend(loc="best", fontsize=7)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


# --- The whole run ---------------------------------------------------------------------------


def timed_runs(args, columns: list[str], work: Path) -> list[dict]:
    """Every column of every seed in a fresh process, ABBA; the constraint runs after."""
    runs: list[dict] = []
    # The first column would otherwise pay for a cold disk cache and uncompiled modules.
    subprocess.run([sys.executable, "-c", WARM_UP], capture_output=True)
    for index, seed in enumerate(range(args.first_seed, args.first_seed + args.seeds)):
        for column in (columns if index % 2 == 0 else columns[::-1]):
            if (column == "autodl-unpruned" and args.ablation_seeds is not None
                    and index >= args.ablation_seeds):
                continue
            folder = work / f"{column}-{seed}"
            folder.mkdir(parents=True, exist_ok=True)
            result = folder / "result.json"
            child = [sys.executable, __file__, "--column", column, "--seed", str(seed),
                     "--result", str(result), "--folder", str(folder),
                     *_common.budget_args(args)]
            t0 = time.time()
            done = subprocess.run([*child, "--t0", repr(t0)], capture_output=True,
                                  text=True, cwd=folder)
            if done.returncode != 0:
                sys.exit(f"{column}, seed {seed} failed:\n{done.stderr[-3000:]}")
            runs.append(json.loads(result.read_text()))
            # Written after every run, so a long run's finished part is never lost.
            (work / "runs.json").write_text(json.dumps(runs, indent=1))
            print(f"seed {seed} {column}: {runs[-1]['wall']:.0f}s", flush=True)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default=DEFAULT_DATASET,
                        help="dataset spec (relative paths: from here, else the repo root)")
    parser.add_argument("--columns", default=",".join(COLUMNS),
                        help=f"comma-separated, from {', '.join(COLUMNS)}")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=5, help="epoch cap per trial")
    parser.add_argument("--max-samples", type=int, default=None,
                        help="at most N training (and N test) examples, for smoke runs")
    parser.add_argument("--ablation-seeds", type=int, default=None,
                        help="autodl-unpruned runs on this many of the first seeds only "
                        "(default: all)")
    parser.add_argument("--constraint-trials", type=int, default=12,
                        help="trials of each constraint-cost run (0: none)")
    parser.add_argument("--latency-rounds", type=int, default=LATENCY_ROUNDS,
                        help="times each model is timed in the analysis (the median counts)")
    parser.add_argument("--ref-accuracy", type=float, default=REF_ACCURACY,
                        help="the hypervolume's reference accuracy")
    parser.add_argument("--out", default="benchmarks/out")
    parser.add_argument("--work", help="keep the studies and models in this folder "
                        "(default: a temporary one, removed after a successful analysis)")
    parser.add_argument("--analyse", metavar="WORK",
                        help="no runs: analyse again the runs kept in WORK")
    parser.add_argument("--merge", metavar="WORK", action="append", default=[],
                        help="with --analyse: the runs kept in this folder too (e.g. a "
                        "later invocation's ablation seed)")
    _common.add_column_options(parser)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.column:
        t0 = args.t0 if args.t0 is not None else time.time()
        Path(args.result).write_text(json.dumps(run_column(args.column, args.seed, t0, args)))
        return

    command = shlex.join(["python", "benchmarks/pareto.py", *sys.argv[1:]])
    columns = _common.chosen_columns(parser, args.columns, COLUMNS)
    args.dataset = resolve_dataset(args.dataset)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if args.analyse:
        work = Path(args.analyse)
        runs, constraints, whole, commands = [], [], 0.0, []
        for folder in (work, *map(Path, args.merge)):
            runs += json.loads((folder / "runs.json").read_text())
            constraints += json.loads((folder / "constraints.json").read_text())
            ran = json.loads((folder / "whole.json").read_text())
            whole += ran["seconds"]
            commands.append(ran.get("command", "?"))
        # The report names the commands that made the runs, and this one.
        command = "` + `".join([*commands, command])
        columns = [c for c in columns if any(run["column"] == c for run in runs)]
    else:
        work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="pareto-"))
        work.mkdir(parents=True, exist_ok=True)
        runs = timed_runs(args, columns, work)
        constraints = []
        # The limits come from the unpruned runs' measures, read from their studies.
        for run in runs:
            if run["column"] == "autodl-unpruned":
                run["trials"] = read_autodl_trials(load_autodl_study(run["storage"]),
                                                   run["t0"])
        if args.constraint_trials:
            for option, limit in constraint_limits(runs).items():
                constraints.append(run_constraint(args, option, limit,
                                                  work / f"constraint{option}"))
                print(f"constraint {option} {limit:g}: {constraints[-1]['wall']:.0f}s",
                      flush=True)
        (work / "constraints.json").write_text(json.dumps(constraints, indent=1))
        whole = time.perf_counter() - started
        (work / "whole.json").write_text(json.dumps({"seconds": whole, "command": command}))
    try:
        splits_by_seed: dict = {}
        for run in runs:
            analyse_run(run, args, splits_by_seed)
        time_again(runs, args.latency_rounds)
        for result in constraints:
            constraint_costs(result)
        unpruned = [run for run in runs if run["column"] == "autodl-unpruned"]
        replays = [replay_pruning(run, args.epochs, args.ref_accuracy,
                                  splits_by_seed[run["seed"]].y_val, variant)
                   for variant in (None, *RULE_VARIANTS) for run in unpruned]
        reference = reference_point(runs, args.ref_accuracy)
    except BaseException:
        print(f"the timed runs are kept in {work}: analyse them again with "
              f"--analyse {work}", file=sys.stderr)
        raise
    data = {"reference": reference, "runs": runs, "replays": replays,
            "constraints": constraints, "ratios": seed_ratios(runs, reference),
            "handed_back_ratios": seed_ratios(runs, reference, handed_back_curve),
            "timed_alike_ratios": seed_ratios(runs, reference, timed_alike_curve),
            "command": command, "seconds": whole}
    (out / "pareto.json").write_text(json.dumps(data, indent=1))
    text = report(args, runs, columns, replays, constraints, reference, command, whole)
    (out / "pareto.md").write_text(text)
    title = (f"{Path(args.dataset.partition(':')[2]).name or args.dataset}, {args.trials} "
             f"trials, {args.epochs} epochs cap"
             + (f", {args.max_samples} samples" if args.max_samples else ""))
    plot(runs, columns, reference, title, out / "pareto.png")
    print(text)
    print(f"wrote {out / 'pareto.md'}, .png and .json")
    if not args.work and not args.analyse:
        shutil.rmtree(work, ignore_errors=True)
    if len({(run["seed"], run["split"]) for run in runs}) != len({run["seed"] for run in runs}):
        sys.exit("the columns' data splits differ for a seed: see the Split line above")


if __name__ == "__main__":
    main()
