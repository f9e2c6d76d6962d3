"""Time to accuracy: how soon each tool, with its own defaults, hands back a good model.

    python benchmarks/time_to_accuracy.py [--dataset idx:../shared/datasets/mnist]
        [--columns autodl,autodl-epoch-rungs,kt-hyperband,...] [--seeds 3]
        [--trials 30] [--epochs 10] [--max-samples N] [--out benchmarks/out]

What users compare: each tool run the way its documentation teaches, on the full real
MNIST images (the t10k set: 10,000 images, split 7,200 train / 800 validation / 2,000
test per seed), from the moment the user starts it until it hands back its best model
and that model's test accuracy is known.

* ``autodl``: the real CLI, ``autodl tune --arch cnn --dataset idx:DIR --trials T
  --epochs E --seed S --storage sqlite:///TMP/s.db``, nothing else: whatever defaults
  autodl has (``--max-samples`` is passed on only when given here, for smoke runs).
* ``autodl-epoch-rungs``, ``autodl-kernels-3-5``, ``autodl-wide-training``: ablations, the
  same command with one lever turned back: ``--pruner sha-epochs`` (Optuna's successive
  halving, rungs in epochs), ``--set kernel_size=[3,5]`` (5x5 kernels searched too), or
  the training space before 2026-12-04 (learning rates 1e-5..1e-1, Adagrad too).
* ``autodl-budget-5m``: a user with five minutes, ``--budget 5m`` and no ``--trials``: as
  many trials as the budget allows (not the bar's defaults). ``autodl-budget-5m-one-bracket``:
  the same with ``--trials 10000``, which the budget ends long before: the pruner of a
  study with a trial count has one bracket (the budget's pruning as before 2026-12-05 noon).
* ``kt-hyperband``: KerasTuner ``Hyperband(objective="val_accuracy", max_epochs=E,
  factor=3, seed=S)`` over the KerasTuner tutorial's CNN space (below), searched with the
  tutorial's ``EarlyStopping(monitor="val_loss", patience=5)``; it runs as many trials as
  its brackets need, whatever ``--trials``. The model handed back is
  ``tuner.get_best_models(1)[0]``.
* ``kt-random``: KerasTuner ``RandomSearch(max_trials=T)``, same space, ``epochs=E``,
  same early stopping.
* ``optuna-tpe-hyperband``: an Optuna study as a user writes it by hand:
  ``TPESampler(seed=S)``, ``HyperbandPruner()`` (Optuna's defaults: ``min_resource=1``,
  ``max_resource="auto"``, factor 3), the same CNN from ``trial.suggest_*``,
  ``optuna_integration.KerasPruningCallback(trial, "val_accuracy")`` and the same early
  stopping, T trials; the best trial's model (kept by the objective) is tested. Needs
  ``pip install 'autodl[bench]'`` (optuna-integration).

The space of the three non-autodl columns (the KerasTuner tutorial CNN): 1 to 3 blocks of
``Conv2D(3x3, relu, same)`` + ``MaxPooling2D``, the first with 16, 32 or 64 filters,
doubling per block; ``Flatten``; ``Dense`` of 64, 128 or 256 units, relu; ``Dropout``
0..0.5; softmax. Learning rate 1e-4..1e-2 (log), optimizer Adam, SGD or RMSprop, weight
decay 0 or 1e-6..1e-2 (log, behind a Boolean), batch size 32, 64 or 128 (tuned in
``HyperModel.fit``, as KerasTuner's docs teach).

Every column gets the same split for a seed: autodl's ``make_splits`` (validation 0.1,
test 0.2), built once per process from the same arrays; each process reports a digest of
its split (autodl's is rebuilt from the facts its study recorded) and the run checks they
agree. Each column of each seed runs in a fresh process, seeds interleaved; its clock
starts when that process is launched (so Python's and TensorFlow's start-up and the data
loading count for every column alike) and stops when the best model's test accuracy is
known (for ``autodl``: when the CLI exits).

Writes ``time-to-accuracy.md`` (the table), ``.png`` (best validation accuracy so far
against wall-clock seconds, every column and seed) and ``.json`` (the raw runs) to
``--out``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATASET = "idx:../shared/datasets/mnist"
#: autodl as shipped, and the ablations: autodl with one cost-aware lever turned back.
AUTODL_COLUMNS = {
    "autodl": [],
    "autodl-epoch-rungs": ["--pruner", "sha-epochs"],  # rungs in epochs, not training FLOPs
    "autodl-kernels-3-5": ["--set", "kernel_size=[3,5]"],  # the wider kernel space
    # the training space before 2026-12-04: learning rates 1e-5..1e-1, Adagrad too
    "autodl-wide-training": ["--set", "learning_rate={low=1e-5, high=1e-1, log=true}",
                             "--set", "optimizer=[adam,sgd,rmsprop,adagrad]"],
    # a user with five minutes: no --trials, as many trials as the budget allows
    "autodl-budget-5m": ["--budget", "5m"],
    # the same with a trial count it never reaches: one bracket, as before 2026-12-05 noon
    "autodl-budget-5m-one-bracket": ["--budget", "5m", "--trials", "10000"],
}
COLUMNS = (*AUTODL_COLUMNS, "kt-hyperband", "kt-random", "optuna-tpe-hyperband")
BASELINE = "kt-hyperband"
KT_FACTOR = 3
#: Early stopping as the KerasTuner Hyperband tutorial writes it (users copy it).
PATIENCE = 5
#: Best validation accuracy so far is read at these wall-clock seconds.
CHECKPOINTS = (60, 120, 300)
#: The split every column uses (autodl's defaults for a dataset without a test split).
VAL_SPLIT, TEST_SPLIT = 0.1, 0.2
WARM_UP = ("import importlib\n"
           "for name in ('tensorflow', 'keras', 'keras_tuner', 'optuna', 'sklearn', "
           "'optuna_integration', 'autodl.cli', 'autodl.tuner', 'autodl.trial', "
           "'autodl.plugins.cnn'):\n"
           "    try: importlib.import_module(name)\n"
           "    except Exception: pass\n")
BENCH_HINT = "pip install 'autodl[bench]'  (optuna-integration, for optuna-tpe-hyperband)"


def resolve_dataset(spec: str) -> str:
    """Make a relative ``idx:``/``npz:``/``images:`` path absolute.

    A path is taken relative to the current folder if it exists there, else relative to
    the repository root (so the default works from anywhere).
    """
    kind, colon, path = spec.partition(":")
    if not colon or Path(path).is_absolute():
        return spec
    here = Path(path)
    return f"{kind}:{(here if here.exists() else REPO / path).resolve()}"


# --- Shared by the non-autodl columns (each runs in its own process) ----------------------


def split_digest(splits) -> str:
    """A short digest of every label array and the test images: equal digests, equal split."""
    import numpy as np

    digest = hashlib.sha256()
    for array in (splits.y_train, splits.y_val, splits.y_test, splits.x_test):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def split_sizes(splits) -> list[int]:
    """Training, validation and test examples."""
    return [len(splits.y_train), len(splits.y_val), len(splits.y_test)]


def make_split(dataset: str, max_samples: int | None, seed: int):
    """The split autodl makes for this seed (``autodl tune --seed S`` with its defaults)."""
    from autodl.datasets import load_dataset, make_splits

    return make_splits(load_dataset(dataset, 96), val_split=VAL_SPLIT, test_split=TEST_SPLIT,
                       max_samples=max_samples, seed=seed)


def build_cnn(values: dict, input_shape, classes: int):
    """The KerasTuner tutorial's CNN, compiled, from one set of hyperparameter values."""
    import keras

    model = keras.Sequential([keras.Input(input_shape)])
    for block in range(values["conv_blocks"]):
        model.add(keras.layers.Conv2D(values["filters"] * 2**block, 3, activation="relu",
                                      padding="same"))
        model.add(keras.layers.MaxPooling2D())
    model.add(keras.layers.Flatten())
    model.add(keras.layers.Dense(values["units"], activation="relu"))
    model.add(keras.layers.Dropout(values["dropout"]))
    model.add(keras.layers.Dense(classes, activation="softmax"))
    optimizer = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD,
                 "rmsprop": keras.optimizers.RMSprop}[values["optimizer"]]
    model.compile(optimizer=optimizer(learning_rate=values["learning_rate"],
                                      weight_decay=values["weight_decay"] or None),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def suggest_cnn(trial) -> tuple[dict, int]:
    """The tutorial CNN's values and batch size, as a hand-written Optuna objective asks."""
    values = {
        "conv_blocks": trial.suggest_int("conv_blocks", 1, 3),
        "filters": trial.suggest_categorical("filters", [16, 32, 64]),
        "units": trial.suggest_categorical("units", [64, 128, 256]),
        "dropout": trial.suggest_float("dropout", 0.0, 0.5),
        "learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True),
        "optimizer": trial.suggest_categorical("optimizer", ["adam", "sgd", "rmsprop"]),
    }
    values["weight_decay"] = (
        trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)
        if trial.suggest_categorical("weight_decay_enabled", [False, True]) else 0.0)
    return values, trial.suggest_categorical("batch_size", [32, 64, 128])


def test_accuracy(model, splits) -> float:
    """Accuracy of ``model`` on the test split."""
    import numpy as np

    predicted = np.argmax(model.predict(splits.x_test, batch_size=256, verbose=0), axis=-1)
    return float(np.mean(predicted == splits.y_test))


def early_stopping():
    """The KerasTuner Hyperband tutorial's ``stop_early``."""
    import keras

    return keras.callbacks.EarlyStopping(monitor="val_loss", patience=PATIENCE)


# --- The columns ---------------------------------------------------------------------------


def run_autodl(args: argparse.Namespace, seed: int, t0: float, options: list[str]) -> dict:
    """The real ``autodl tune`` CLI (with ``options``), then its study read back."""
    program = _common.autodl_program()
    with tempfile.TemporaryDirectory() as folder:
        storage = f"sqlite:///{folder}/s.db"
        # With a budget, the budget and not --trials ends the run.
        trials = [] if "--budget" in options else ["--trials", str(args.trials)]
        command = [*program, "tune", "--arch", "cnn", "--dataset", args.dataset, *trials,
                   "--epochs", str(args.epochs), "--seed", str(seed), "--storage", storage,
                   *options]
        if args.max_samples:
            command += ["--max-samples", str(args.max_samples)]
        done = subprocess.run(command, capture_output=True, text=True, cwd=folder)
        wall = time.time() - t0
        if done.returncode != 0:
            sys.exit(f"autodl tune failed ({done.returncode}):\n{done.stdout[-2000:]}\n"
                     f"{done.stderr[-3000:]}")
        result = read_autodl_study(storage, t0)
    shown = shlex.join(["autodl", *command[len(program):]]).replace(folder, "<tmp>")
    result.update(wall=wall, command=shown, output_tail=done.stdout[-1500:])
    return result


def read_autodl_study(storage: str, t0: float) -> dict:
    """Anytime curve, test accuracy, counts and the split digest from autodl's study."""
    import optuna

    from autodl import storage as studies
    from autodl.storage import TrialAttr

    (name,) = optuna.study.get_all_study_names(storage)
    study = optuna.load_study(study_name=name, storage=storage)
    points, states, epochs = [], {}, 0
    for trial in study.get_trials(deepcopy=False):
        states[trial.state.name] = states.get(trial.state.name, 0) + 1
        history = trial.user_attrs.get(TrialAttr.HISTORY) or []
        epochs += len(history)
        if not history or trial.datetime_complete is None:
            continue
        # Each epoch's end, counted back from the trial's completion by the epochs after
        # it: never earlier than it really was (what follows `fit` is counted as training).
        end = trial.datetime_complete.timestamp()
        remaining = sum(record["seconds"] for record in history)
        for record in history:
            remaining -= record["seconds"]
            points.append((round(end - remaining - t0, 3), float(record["val_accuracy"])))
    points.sort()
    test = studies.recorded_test(study)
    best = study.get_trials(deepcopy=False)[test["trial"]]
    splits = studies.study_splits(study)  # the split autodl's recorded facts make
    return {"test": float(test["accuracy"]), "best_val": float(best.value),
            "trials": len(study.trials), "pruned": states.get("PRUNED", 0),
            "failed": states.get("FAIL", 0), "epochs": epochs, "points": points,
            "final_fit_seconds": float(best.user_attrs[TrialAttr.TRAIN_SECONDS]),
            "best_trial": test["trial"], "split": split_digest(splits),
            "sizes": split_sizes(splits),
            "best": best.user_attrs.get(TrialAttr.HYPERPARAMETERS, best.params)}


def run_keras_tuner(args, seed: int, clock: _common.EpochClock, splits, hyperband: bool) -> dict:
    """KerasTuner as its tutorial teaches: a ``HyperModel`` with ``build`` and ``fit``."""
    import keras_tuner

    fit_seconds: dict[str, float] = {}
    current = {"trial": None}

    class TutorialCNN(keras_tuner.HyperModel):
        def build(self, hp):
            values = {
                "conv_blocks": hp.Int("conv_blocks", 1, 3),
                "filters": hp.Choice("filters", [16, 32, 64]),
                "units": hp.Choice("units", [64, 128, 256]),
                "dropout": hp.Float("dropout", 0.0, 0.5),
                "learning_rate": hp.Float("learning_rate", 1e-4, 1e-2, sampling="log"),
                "optimizer": hp.Choice("optimizer", ["adam", "sgd", "rmsprop"]),
            }
            enabled = hp.Boolean("weight_decay_enabled")
            with hp.conditional_scope("weight_decay_enabled", [True]):
                decay = hp.Float("weight_decay", 1e-6, 1e-2, sampling="log")
            values["weight_decay"] = decay if enabled else 0.0
            return build_cnn(values, splits.input_shape, splits.num_classes)

        def fit(self, hp, model, *fit_args, **fit_kwargs):
            start = time.perf_counter()
            history = model.fit(*fit_args, batch_size=hp.Choice("batch_size", [32, 64, 128]),
                                **fit_kwargs)
            fit_seconds[current["trial"]] = time.perf_counter() - start
            return history

    def timed(tuner_class):
        """The tuner unchanged, but noting which trial the next ``fit`` belongs to."""

        class Timed(tuner_class):
            def run_trial(self, trial, *run_args, **run_kwargs):
                current["trial"] = trial.trial_id
                return super().run_trial(trial, *run_args, **run_kwargs)

        return Timed

    with tempfile.TemporaryDirectory() as folder:
        common = {"objective": "val_accuracy", "seed": seed, "directory": folder,
                  "project_name": "tta"}
        if hyperband:
            tuner = timed(keras_tuner.Hyperband)(TutorialCNN(), max_epochs=args.epochs,
                                                 factor=KT_FACTOR, **common)
        else:
            tuner = timed(keras_tuner.RandomSearch)(TutorialCNN(), max_trials=args.trials,
                                                    **common)
        tuner.search(splits.x_train, splits.y_train, epochs=args.epochs,
                     validation_data=(splits.x_val, splits.y_val),
                     callbacks=[clock.callback(), early_stopping()], verbose=0)
        test = test_accuracy(tuner.get_best_models(1)[0], splits)
        wall = clock.seconds()
        best = tuner.oracle.get_best_trials(1)[0]
        trials = list(tuner.oracle.trials.values())
    # A Hyperband trial promoted from an earlier one goes on training its checkpoint: the
    # best model's training is the whole chain.
    final_fit, trial = 0.0, best
    while trial is not None:
        final_fit += fit_seconds.get(trial.trial_id, 0.0)
        parent = trial.hyperparameters.values.get("tuner/trial_id")
        trial = tuner.oracle.trials.get(parent) if parent else None
    return {"wall": wall, "test": test, "best_val": float(best.score), "trials": len(trials),
            "new_configurations": sum("tuner/trial_id" not in t.hyperparameters.values
                                      for t in trials),
            "pruned": 0, "failed": sum(t.status == "FAILED" for t in trials),
            "final_fit_seconds": final_fit,
            "best": {k: v for k, v in best.hyperparameters.values.items()
                     if not k.startswith("tuner/")}}


def run_optuna(args, seed: int, clock: _common.EpochClock, splits) -> dict:
    """A hand-written Optuna study: TPE, Hyperband pruning through optuna-integration."""
    import keras
    import optuna
    from optuna_integration import KerasPruningCallback

    kept: dict = {"value": -math.inf}

    def objective(trial: optuna.Trial) -> float:
        keras.backend.clear_session()
        values, batch_size = suggest_cnn(trial)
        model = build_cnn(values, splits.input_shape, splits.num_classes)
        start = time.perf_counter()
        history = model.fit(
            splits.x_train, splits.y_train, validation_data=(splits.x_val, splits.y_val),
            batch_size=batch_size, epochs=args.epochs, verbose=0,
            callbacks=[clock.callback(), KerasPruningCallback(trial, "val_accuracy"),
                       early_stopping()],
        )
        seconds = time.perf_counter() - start
        value = max(history.history["val_accuracy"])
        if value > kept["value"]:  # the study's best trial is the first of the best
            kept.update(value=value, model=model, seconds=seconds)
        return value

    pruner = optuna.pruners.HyperbandPruner()
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=seed), pruner=pruner)
    study.optimize(objective, n_trials=args.trials)
    test = test_accuracy(kept["model"], splits)
    wall = clock.seconds()
    states = [t.state.name for t in study.trials]
    return {"wall": wall, "test": test, "best_val": float(study.best_value),
            "trials": len(states), "pruned": states.count("PRUNED"),
            "failed": states.count("FAIL"), "final_fit_seconds": kept["seconds"],
            "best": study.best_params,
            # What "auto" resolved to (from the first completed trial's last step + 1).
            "hyperband_max_resource": getattr(pruner, "_max_resource", None),
            "hyperband_brackets": getattr(pruner, "_n_brackets", None)}


def run_column(column: str, seed: int, t0: float, args: argparse.Namespace) -> dict:
    """One column's search for one seed, in this (fresh) process."""
    if column in AUTODL_COLUMNS:
        result = run_autodl(args, seed, t0, AUTODL_COLUMNS[column])
    else:
        import keras

        clock = _common.EpochClock(t0)
        splits = make_split(args.dataset, args.max_samples, seed)
        keras.utils.set_random_seed(seed)
        if column == "optuna-tpe-hyperband":
            result = run_optuna(args, seed, clock, splits)
        else:
            result = run_keras_tuner(args, seed, clock, splits, hyperband=column == BASELINE)
        result.update(points=clock.points, epochs=len(clock.points),
                      split=split_digest(splits), sizes=split_sizes(splits))
    result.update(column=column, seed=seed,
                  search_to_final=result["wall"] / max(result["final_fit_seconds"], 1e-9))
    return result


# --- The whole run: columns in subprocesses, then the table and the plot -------------------


def best_so_far(points) -> list[tuple[float, float]]:
    """The anytime curve: (seconds, best validation accuracy seen by then)."""
    curve, best = [], -math.inf
    for seconds, value in sorted(points):
        best = max(best, value)
        curve.append((seconds, best))
    return curve


def best_at(points, seconds: float) -> float | None:
    """Best validation accuracy seen by ``seconds``; ``None`` if no epoch had ended."""
    seen = [value for t, value in points if t <= seconds]
    return max(seen) if seen else None


def mean_spread(values, digits: int, scale: float = 1.0) -> str:
    """``mean ± standard deviation`` (just the mean for one value)."""
    values = [v * scale for v in values if v is not None]
    if not values:
        return "–"
    mean = statistics.mean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def baseline_ratios(runs: list[dict], column: str) -> list[float]:
    """Per seed: this column's wall time over kt-hyperband's in the same run."""
    walls = {run["seed"]: run["wall"] for run in runs if run["column"] == BASELINE}
    return [run["wall"] / walls[run["seed"]] for run in runs
            if run["column"] == column and run["seed"] in walls]


def table(runs: list[dict], columns: list[str]) -> str:
    """The Markdown table: mean ± standard deviation over seeds."""
    at = " | ".join(f"best val @{s} s %" for s in CHECKPOINTS)
    lines = [f"| column | test acc % | wall s | wall / {BASELINE} | search-to-final "
             f"| trials | epochs | {at} |",
             "|---|---|---|---|---|---|---|" + "---|" * len(CHECKPOINTS)]
    for column in columns:
        mine = [run for run in runs if run["column"] == column]
        if not mine:
            continue
        trials = mean_spread([run["trials"] for run in mine], 1)
        pruned = statistics.mean(run["pruned"] for run in mine)
        if pruned:
            trials += f" ({pruned:.1f} pruned)"
        if "new_configurations" in mine[0]:
            trials += (f" ({statistics.mean(r['new_configurations'] for r in mine):.1f} "
                       "new configurations)")
        at_cells = []
        for seconds in CHECKPOINTS:
            values = [best_at(run["points"], seconds) for run in mine]
            reached = [v for v in values if v is not None]
            cell = mean_spread(reached, 2, 100)
            if len(reached) < len(values):
                cell += f" ({len(reached)}/{len(values)} seeds had an epoch)"
            at_cells.append(cell)
        lines.append(
            f"| {column} | {mean_spread([r['test'] for r in mine], 2, 100)} "
            f"| {mean_spread([r['wall'] for r in mine], 0)} "
            f"| {mean_spread(baseline_ratios(runs, column), 2)} "
            f"| {mean_spread([r['search_to_final'] for r in mine], 1)} "
            f"| {trials} | {mean_spread([r['epochs'] for r in mine], 0)} "
            f"| {' | '.join(at_cells)} |")
    return "\n".join(lines)


def per_seed_table(runs: list[dict]) -> str:
    """One line per run."""
    lines = ["| column | seed | test acc % | best val % | wall s | final model's fit s "
             "| trials | epochs | split digest |", "|---|---|---|---|---|---|---|---|---|"]
    for run in sorted(runs, key=lambda r: (r["column"], r["seed"])):
        lines.append(
            f"| {run['column']} | {run['seed']} | {100 * run['test']:.2f} "
            f"| {100 * run['best_val']:.2f} | {run['wall']:.0f} "
            f"| {run['final_fit_seconds']:.1f} | {run['trials']} | {run['epochs']} "
            f"| `{run['split']}` |")
    return "\n".join(lines)


def plot(runs: list[dict], columns: list[str], title: str, path: Path) -> None:
    """Best-so-far validation accuracy against wall-clock seconds, one colour per column."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 5), dpi=90)
    finals = []
    for index, column in enumerate(columns):
        for n, run in enumerate(r for r in runs if r["column"] == column):
            curve = best_so_far(run["points"])
            if not curve:
                continue
            seconds, best = zip(*curve, strict=True)
            # Held flat until the column handed back its model.
            axes.step([*seconds, run["wall"]], [*best, best[-1]], where="post",
                      color=f"C{index}", alpha=0.8, linewidth=1.2,
                      label=column if n == 0 else None)
            axes.plot([run["wall"]], [best[-1]], marker="o", color=f"C{index}", markersize=4)
            finals.append(best[-1])
    longest = max((run["wall"] for run in runs), default=0.0)
    for seconds in (s for s in CHECKPOINTS if s <= longest):
        axes.axvline(seconds, color="grey", linestyle=":", linewidth=0.8)
    axes.set_ylim(min([0.9, *(value - 0.02 for value in finals)]), 1.0)
    axes.set(xlabel="wall-clock seconds since the tool was started (dot: model handed back)",
             ylabel="best validation accuracy so far", title=title)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def versions() -> str:
    """KerasTuner's and optuna-integration's versions (machine() names the others)."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for package in ("keras-tuner", "optuna-integration"):
        try:
            found.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            found.append(f"{package} not installed")
    return ", ".join(found)


def report(args, runs: list[dict], columns: list[str], command: str, whole: float) -> str:
    """The Markdown file's text."""
    from _common import machine

    seeds = sorted({run["seed"] for run in runs})
    digests = {seed: {run["split"] for run in runs if run["seed"] == seed} for seed in seeds}
    same = all(len(found) == 1 for found in digests.values())
    optuna_runs = [run for run in runs if run["column"] == "optuna-tpe-hyperband"]
    resources = sorted({str(run.get("hyperband_max_resource")) for run in optuna_runs})
    autodl_command = next((run["command"] for run in runs if "command" in run), None)
    notes = [
        f"Command: `{command}` ({whole / 60:.1f} min in all)",
        f"Machine: {machine()}; {versions()}",
        f"Data: `{args.dataset}`"
        + (f", at most {args.max_samples} samples" if args.max_samples else "")
        + f"; budget {args.trials} trials (kt-hyperband: as its brackets need), "
          f"{args.epochs} epochs per trial at most; seeds {', '.join(map(str, seeds))}.",
        "Split: " + ("identical in every column for each seed (digest of the training, "
                     "validation and test labels and the test images)" if same else
                     f"**DIFFERS between columns**: {digests}") + ".",
    ]
    if autodl_command:
        notes.append(f"autodl ran as `{autodl_command}`.")
    if optuna_runs:
        notes.append("optuna-tpe-hyperband: `HyperbandPruner()` with `max_resource=\"auto\"`, "
                     f"resolved to {', '.join(resources)}.")
    train, val, test = runs[0]["sizes"]
    notes += [
        f"Test acc: the model each tool hands back, on the {test:,} held-out images (one "
        f"image is {100 / test:.3g} points; {train:,} training, {val:,} validation images). "
        "Wall s: from launching the tool's process until that accuracy is "
        f"known (autodl: the CLI's whole run). wall / {BASELINE}: per seed, in this run. "
        "Search-to-final: the search's wall time over the time it took to train the model "
        "handed back once (`fit` only; autodl: the best trial's `train_seconds`; "
        "kt-hyperband: the fits of the best trial and the trials it was promoted from). "
        "Epochs: epochs trained, all trials. Best val @N s: the best validation accuracy of "
        "any epoch of any trial ended by then (one validation image is "
        f"{100 / val:.3g} points). "
        "Spread: standard deviation over seeds.",
    ]
    return ("# Time to accuracy\n\n" + "\n\n".join(notes) + "\n\n" + table(runs, columns)
            + "\n\n![best validation accuracy so far against wall-clock seconds]"
              "(time-to-accuracy.png)\n\n## Per run\n\n" + per_seed_table(runs) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default=DEFAULT_DATASET,
                        help="dataset spec (relative paths: from here, else the repo root)")
    parser.add_argument("--columns", default=",".join(COLUMNS),
                        help=f"comma-separated, from {', '.join(COLUMNS)}")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds run are first-seed .. first-seed + seeds - 1")
    parser.add_argument("--merge", metavar="JSON", help="runs of an earlier invocation "
                        "(its time-to-accuracy.json) to report with these")
    parser.add_argument("--trials", type=int, default=30,
                        help="trials of autodl, kt-random and optuna-tpe-hyperband")
    parser.add_argument("--epochs", type=int, default=10, help="epoch cap per trial")
    parser.add_argument("--max-samples", type=int, default=None,
                        help="at most N training (and N test) examples, for smoke runs")
    parser.add_argument("--out", default="benchmarks/out")
    _common.add_column_options(parser)
    args = parser.parse_args()
    if args.column:
        t0 = args.t0 if args.t0 is not None else time.time()
        Path(args.result).write_text(json.dumps(run_column(args.column, args.seed, t0, args)))
        return

    command = shlex.join(["python", "benchmarks/time_to_accuracy.py", *sys.argv[1:]])
    columns = _common.chosen_columns(parser, args.columns, COLUMNS)
    if "optuna-tpe-hyperband" in columns:
        from importlib.util import find_spec

        if find_spec("optuna_integration") is None:
            sys.exit(f"optuna-tpe-hyperband needs optuna-integration: {BENCH_HINT}")
    args.dataset = resolve_dataset(args.dataset)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs: list[dict] = json.loads(Path(args.merge).read_text()) if args.merge else []
    columns += [c for c in dict.fromkeys(run["column"] for run in runs) if c not in columns]
    started = time.perf_counter()
    # The first column would otherwise pay for a cold disk cache and uncompiled modules.
    subprocess.run([sys.executable, "-c", WARM_UP], capture_output=True)
    with tempfile.TemporaryDirectory() as folder:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for column in columns:
                result = Path(folder) / f"{column}-{seed}.json"
                child = [sys.executable, __file__, "--column", column, "--seed", str(seed),
                         "--result", str(result), *_common.budget_args(args)]
                t0 = time.time()
                done = subprocess.run([*child, "--t0", repr(t0)], capture_output=True,
                                      text=True, cwd=folder)
                if done.returncode != 0:
                    sys.exit(f"{column}, seed {seed} failed:\n{done.stderr[-3000:]}")
                runs.append(json.loads(result.read_text()))
                # Written after every run, so a long run's finished part is never lost.
                (out / "time-to-accuracy.json").write_text(json.dumps(runs, indent=1))
                print(f"seed {seed} {column}: {runs[-1]['wall']:.0f}s, "
                      f"test {runs[-1]['test']:.4f}, {runs[-1]['trials']} trials, "
                      f"{runs[-1]['epochs']} epochs", flush=True)
    whole = time.perf_counter() - started
    text = report(args, runs, columns, command, whole)
    (out / "time-to-accuracy.md").write_text(text)
    seeds = len({run["seed"] for run in runs})
    title = (f"{Path(args.dataset.partition(':')[2]).name or args.dataset}, {args.trials} "
             f"trials, {args.epochs} epochs cap, {seeds} seeds"
             + (f", {args.max_samples} samples" if args.max_samples else ""))
    plot(runs, columns, title, out / "time-to-accuracy.png")
    print(text)
    print(f"wrote {out / 'time-to-accuracy.md'}, .png and .json")
    if len({(run["seed"], run["split"]) for run in runs}) != len({run["seed"] for run in runs}):
        sys.exit("the columns' data splits differ for a seed: see the Split line above")


if __name__ == "__main__":
    main()
