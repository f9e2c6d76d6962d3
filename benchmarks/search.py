"""Search quality and speed: autodl against KerasTuner and plain Optuna, same budget, same run.

    python benchmarks/search.py [--dataset digits] [--trials 10] [--epochs 9] [--seeds 3]
        [--max-samples N] [--target ACC] [--compare-spaces] [--out benchmarks/out]

Every column searches the same space (the `cnn` plugin and the core's training
hyperparameters, as autodl resolves them), on the same data split, with the same
per-trial epoch cap:

* ``autodl``: ``autodl tune`` with its defaults (TPE, successive-halving pruner, early stopping);
* ``kt-hyperband``: KerasTuner ``Hyperband`` (``max_epochs`` = the cap, factor 3, one
  iteration: it runs as many trials as its brackets need);
* ``kt-random``: KerasTuner ``RandomSearch``, ``--trials`` trials of the full cap;
* ``optuna-random``: Optuna as a user would hand-write it: ``RandomSampler``, no pruner,
  the full cap, no early stopping;
* ``autodl-rich`` (with ``--compare-spaces``): autodl with :data:`RICH_SPACE`.

Each column of each seed runs in a fresh process, so no Keras state leaks from one to
the next. Its clock starts just before the search (TensorFlow's start-up counts for no
column; autodl's clock also covers its own data loading and checks) and stops once the
best model's test accuracy is known. Seeds are interleaved (seed 0: every column, then
seed 1...) so machine noise hits the columns alike; the data split follows the seed.

Writes ``search-<dataset>.md`` (the table), ``.png`` (best-so-far validation accuracy
against wall-clock time, every column and seed) and ``.json`` (the raw runs) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

COLUMNS = ("autodl", "kt-hyperband", "kt-random", "optuna-random")
#: The richer space of issue 7: schedules, batch norm and augmentation, searched.
RICH_SPACE = (
    "lr_schedule=[constant,exponential,step,cosine,cyclic]",
    "batch_norm=[false,true]",
    "augment=[false,true]",
)
ARCH = "cnn"
KT_FACTOR = 3
#: Default targets: a validation accuracy every column reaches on most seeds.
TARGETS = {"digits": 0.97, "mnist": 0.95}


def dataset_label(spec: str) -> str:
    """A short name for files and targets: ``mnist`` for ``idx:../shared/datasets/mnist``."""
    return Path(spec.partition(":")[2] or spec).name or spec


# --- One column of one seed (runs in its own process) ------------------------------------


def compile_like_autodl(model, values: dict) -> None:
    """Compile as autodl's trial runner does, from the core's training hyperparameters."""
    from autodl.optimizers import OPTIMIZERS

    model.compile(
        optimizer=OPTIMIZERS[values["optimizer"]](values["learning_rate"],
                                                  values["weight_decay"] or None),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


def test_accuracy(model, splits) -> float:
    """Accuracy of ``model`` on the test split."""
    import numpy as np

    predicted = np.argmax(model.predict(splits.x_test, batch_size=256, verbose=0), axis=-1)
    return float(np.mean(predicted == splits.y_test))


def declare_in_keras_tuner(hp, name: str, spec):
    """Declare one autodl spec as a KerasTuner hyperparameter and return its value.

    "0, or a log range" (weight decay) becomes what autodl asks Optuna: a Boolean
    ``NAME_enabled`` and, in its conditional scope, the log-uniform float.
    """
    from autodl.config import Choice, Fixed, FloatRange, IntRange

    if isinstance(spec, Fixed):
        return hp.Fixed(name, spec.value)
    if isinstance(spec, Choice):
        if set(spec.values) == {False, True}:
            return hp.Boolean(name)
        return hp.Choice(name, list(spec.values))
    sampling = "log" if spec.log else "linear"
    if isinstance(spec, IntRange):
        return hp.Int(name, spec.low, spec.high, step=spec.step, sampling=sampling)
    if not isinstance(spec, FloatRange):
        raise TypeError(f"no KerasTuner form for {spec!r}")
    if not spec.zero:
        return hp.Float(name, spec.low, spec.high, step=spec.step, sampling=sampling)
    enabled = hp.Boolean(f"{name}_enabled")
    with hp.conditional_scope(f"{name}_enabled", [True]):
        value = hp.Float(name, spec.low, spec.high, sampling=sampling)
    return value if enabled else 0.0


def keras_tuner_hypermodel(hypermodel, specs: dict):
    """The autodl search space as a KerasTuner ``HyperModel`` around the plugin.

    Every spec autodl resolved (training ones and the plugin's, narrowed by the shared
    defaults, e.g. ``depth`` 2..8) is declared first, so the plugin's own declarations
    of the same names take these values.
    """
    import keras_tuner

    class SameSpace(keras_tuner.HyperModel):
        def build(self, hp):
            values = {name: declare_in_keras_tuner(hp, name, spec)
                      for name, spec in specs.items()}
            model = hypermodel.build(hp)
            compile_like_autodl(model, values)
            return model

        def fit(self, hp, model, *args, **kwargs):
            return model.fit(*args, batch_size=hp.get("batch_size"), **kwargs)

    return SameSpace(name="same-space")


def run_autodl(args: argparse.Namespace, seed: int, clock: _common.EpochClock,
               rich: bool) -> dict:
    """``autodl tune`` in this process, defaults but for the budget (and the rich space)."""
    from _common import Quiet

    from autodl.config import load_config
    from autodl.tuner import tune

    class Listener(Quiet):
        def epoch_end(self, trial_number, epoch, record):
            clock.record(record["val_accuracy"])

    with tempfile.TemporaryDirectory() as folder:
        config = load_config(
            {"arch": ARCH, "dataset": args.dataset, "trials": args.trials,
             "epochs": args.epochs, "seed": seed, "max_samples": args.max_samples,
             "storage": f"sqlite:///{folder}/autodl.db", "study": "search"},
            assignments=list(RICH_SPACE) if rich else [],
        )
        clock.t0 = time.time()
        summary = tune(config, Listener())
        wall = clock.seconds()
    return {"wall": wall, "best_val": summary.best.value, "test": summary.test_accuracy,
            "trials": sum(summary.counts.values()), "pruned": summary.counts["PRUNED"],
            "best": summary.best.hyperparameters}


def run_keras_tuner(args, seed: int, clock: _common.EpochClock, splits, hypermodel, specs,
                    hyperband: bool) -> dict:
    """KerasTuner's ``Hyperband`` or ``RandomSearch`` on the same space and data."""
    import keras_tuner

    common = {"hypermodel": keras_tuner_hypermodel(hypermodel, specs),
              "objective": keras_tuner.Objective("val_accuracy", "max"), "seed": seed,
              "overwrite": True, "project_name": "search"}
    with tempfile.TemporaryDirectory() as folder:
        if hyperband:
            tuner = keras_tuner.Hyperband(max_epochs=args.epochs, factor=KT_FACTOR,
                                          directory=folder, **common)
        else:
            tuner = keras_tuner.RandomSearch(max_trials=args.trials, directory=folder,
                                             **common)
        clock.t0 = time.time()
        tuner.search(splits.x_train, splits.y_train, epochs=args.epochs,
                     validation_data=(splits.x_val, splits.y_val),
                     callbacks=[clock.callback()], verbose=0)
        best_trial = tuner.oracle.get_best_trials(1)[0]
        test = test_accuracy(tuner.get_best_models(1)[0], splits)
        wall = clock.seconds()
        trials = len(tuner.oracle.trials)
    return {"wall": wall, "best_val": best_trial.score, "test": test, "trials": trials,
            "pruned": 0, "best": {k: v for k, v in best_trial.hyperparameters.values.items()
                                  if not k.startswith("tuner/")}}


def run_optuna(args, seed: int, clock: _common.EpochClock, splits, hypermodel) -> dict:
    """Plain Optuna, as a user writes it: random sampling, every trial the full cap.

    The model kept per trial is its best epoch's (``EarlyStopping`` whose patience never
    runs out restores it at the end), as KerasTuner's checkpoints and autodl keep.
    """
    import keras
    import optuna

    from autodl.config import Space
    from autodl.hyperparameters import OptunaHyperParameters
    from autodl.trial import build_model, declare_training

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    best: dict = {"value": -1.0}

    def objective(trial: optuna.Trial) -> float:
        keras.backend.clear_session()
        hp = OptunaHyperParameters(Space(), trial)
        training = declare_training(hp, hypermodel)
        model = build_model(hypermodel, hp)
        compile_like_autodl(model, training)
        keep_best = keras.callbacks.EarlyStopping("val_accuracy", mode="max",
                                                  patience=args.epochs,
                                                  restore_best_weights=True)
        history = model.fit(splits.x_train, splits.y_train,
                            validation_data=(splits.x_val, splits.y_val),
                            batch_size=training["batch_size"], epochs=args.epochs,
                            callbacks=[clock.callback(), keep_best], verbose=0)
        value = max(history.history["val_accuracy"])
        if value > best["value"]:
            best.update(value=value, model=model, values=dict(hp.values))
        return value

    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=seed))
    clock.t0 = time.time()
    study.optimize(objective, n_trials=args.trials)
    test = test_accuracy(best["model"], splits)
    return {"wall": clock.seconds(), "best_val": study.best_value, "test": test,
            "trials": len(study.trials), "pruned": 0, "best": best["values"]}


def run_column(column: str, seed: int, args: argparse.Namespace) -> dict:
    """One column's search for one seed, in this process."""
    import keras

    from autodl.runtime import setup_devices
    from autodl.tuner import prepare_task

    setup_devices()
    keras.utils.set_random_seed(seed)
    clock = _common.EpochClock()
    if column.startswith("autodl"):
        result = run_autodl(args, seed, clock, rich=column == "autodl-rich")
    else:
        from autodl.config import Space, TuneConfig
        from autodl.trial import dry_build

        # The split and the hypermodel autodl makes for this seed.
        hypermodel, splits = prepare_task(TuneConfig(
            arch=ARCH, dataset=args.dataset, seed=seed, max_samples=args.max_samples))
        if column == "optuna-random":
            result = run_optuna(args, seed, clock, splits, hypermodel)
        else:
            specs = dry_build(hypermodel, Space()).specs
            result = run_keras_tuner(args, seed, clock, splits, hypermodel, specs,
                                     hyperband=column == "kt-hyperband")
    result.update(column=column, seed=seed, points=clock.points, epochs=len(clock.points))
    return result


# --- The whole run: columns in subprocesses, then the table and the plot ------------------


def best_so_far(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The anytime curve: (time, best validation accuracy seen by then)."""
    curve, best = [], -math.inf
    for seconds, value in points:
        best = max(best, value)
        curve.append((seconds, best))
    return curve


def time_to_target(points: list[tuple[float, float]], target: float) -> float | None:
    """Seconds until the best-so-far validation accuracy first reached ``target``."""
    return next((seconds for seconds, best in best_so_far(points) if best >= target), None)


def _mean_spread(values: list[float], digits: int, scale: float = 1.0) -> str:
    values = [v * scale for v in values]
    mean = statistics.mean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def table(runs: list[dict], columns: list[str], target: float) -> str:
    """The Markdown table: mean ± standard deviation over seeds."""
    lines = [
        f"| column | trials | epochs trained | wall-clock s | s per epoch | best val acc % "
        f"| test acc % | time to val ≥ {target:.3f}, s (seeds reaching it) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for column in columns:
        mine = [run for run in runs if run["column"] == column]
        reached = [t for t in (time_to_target(run["points"], target) for run in mine)
                   if t is not None]
        to_target = (_mean_spread(reached, 0) if reached else "not reached") + \
            f" ({len(reached)}/{len(mine)})"
        pruned = sum(run["pruned"] for run in mine)
        trials = _mean_spread([run["trials"] for run in mine], 1) + \
            (f" ({pruned / len(mine):.1f} pruned)" if pruned else "")
        lines.append(
            f"| {column} | {trials} | {_mean_spread([run['epochs'] for run in mine], 0)} "
            f"| {_mean_spread([run['wall'] for run in mine], 0)} "
            f"| {_mean_spread([run['wall'] / max(run['epochs'], 1) for run in mine], 2)} "
            f"| {_mean_spread([run['best_val'] for run in mine], 2, 100)} "
            f"| {_mean_spread([run['test'] for run in mine], 2, 100)} | {to_target} |"
        )
    return "\n".join(lines)


def plot(runs: list[dict], columns: list[str], target: float, title: str, path: Path) -> None:
    """Best-so-far validation accuracy against wall-clock time, one colour per column."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4.5), dpi=90)
    for index, column in enumerate(columns):
        for n, run in enumerate(run for run in runs if run["column"] == column):
            curve = best_so_far(run["points"])
            if curve:
                seconds, best = zip(*curve, strict=True)
                axes.step(seconds, best, where="post", color=f"C{index}", alpha=0.8,
                          linewidth=1.2, label=column if n == 0 else None)
    axes.axhline(target, color="grey", linestyle=":", linewidth=1, label=f"target {target:g}")
    low = min((value for run in runs for _, value in run["points"]), default=0.0)
    axes.set_ylim(max(low, target - 0.15), 1.0)
    axes.set(xlabel="wall-clock seconds since the search started",
             ylabel="best validation accuracy so far", title=title)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--trials", type=int, default=10,
                        help="trials of autodl, kt-random and optuna-random")
    parser.add_argument("--epochs", type=int, default=9, help="epoch cap per trial")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-samples", type=int, default=None)
    parser.add_argument("--target", type=float, default=None,
                        help="validation accuracy for time-to-target (default per dataset)")
    parser.add_argument("--compare-spaces", action="store_true",
                        help="add autodl with the richer space (schedules, batch norm, "
                             "augmentation)")
    parser.add_argument("--out", default="benchmarks/out")
    _common.add_column_options(parser)
    args = parser.parse_args()
    if args.column:
        Path(args.result).write_text(json.dumps(run_column(args.column, args.seed, args)))
        return

    from _common import machine

    label = dataset_label(args.dataset)
    target = args.target if args.target is not None else TARGETS.get(label, 0.9)
    columns = [*COLUMNS, *(["autodl-rich"] if args.compare_spaces else [])]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        for seed in range(args.seeds):
            for column in columns:
                result = Path(folder) / f"{column}-{seed}.json"
                command = [sys.executable, __file__, "--column", column, "--seed", str(seed),
                           "--result", str(result), *_common.budget_args(args)]
                done = subprocess.run(command, capture_output=True, text=True)
                if done.returncode != 0:
                    sys.exit(f"{column}, seed {seed} failed:\n{done.stderr[-3000:]}")
                runs.append(json.loads(result.read_text()))
                print(f"seed {seed} {column}: {runs[-1]['wall']:.0f}s, "
                      f"test {runs[-1]['test']:.4f}", flush=True)
    budget = (f"{label}, {args.trials} trials, {args.epochs} epochs cap, {args.seeds} seeds"
              + (f", {args.max_samples} samples" if args.max_samples else ""))
    text = table(runs, columns, target)
    (out / f"search-{label}.md").write_text(f"{budget}\n\n{text}\n")
    (out / f"search-{label}.json").write_text(json.dumps(runs, indent=1))
    plot(runs, columns, target, budget, out / f"search-{label}.png")
    print(f"machine: {machine()}")
    print(f"budget: {budget}; whole run {time.perf_counter() - started:.0f}s")
    print(text)
    print(f"wrote {out / f'search-{label}.md'}, .png and .json")


if __name__ == "__main__":
    main()
