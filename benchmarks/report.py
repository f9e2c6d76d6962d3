"""Time of `autodl report` on a large study: 1,000 trials, as a user runs the command.

    python benchmarks/report.py [--trials 1000] [--keep DIR]

The study is made quickly but looks like a real one. Its first trial is real: `autodl
tune` trains `mlp` on digits (with good hyperparameters, queued), which records the
study's facts, the trial's history and its model in the artifact store. The other
trials are added with `optuna.create_trial`, in the same search space: about half are
pruned after 1, 2 or 4 epochs, a few failed, the rest complete after early stopping,
each with per-epoch intermediate values and the user attributes a real trial records.

Reports the wall time of `python -m autodl report` (TensorFlow's start-up included;
target: under 60 s), then the seconds each figure takes, drawn in this process.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import optuna  # noqa: E402
from _common import Quiet, machine  # noqa: E402
from optuna.distributions import (  # noqa: E402
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState  # noqa: E402

from autodl import report  # noqa: E402
from autodl.config import TRAINING_SPACE, TuneConfig  # noqa: E402
from autodl.runtime import setup_devices  # noqa: E402
from autodl.tuner import tune  # noqa: E402

STUDY = "report-bench"
EPOCHS = 10
GOOD = {"learning_rate": 3e-3, "batch_size": 32, "optimizer": "adam",
        "weight_decay_enabled": False, "depth": 2, "units": 256, "activation": "relu",
        "dropout": 0.1}


def sample(rng: np.random.Generator, distribution) -> object:
    """A random value of an Optuna distribution."""
    if isinstance(distribution, CategoricalDistribution):
        return distribution.choices[rng.integers(len(distribution.choices))]
    low, high = distribution.low, distribution.high
    value = (math.exp(rng.uniform(math.log(low), math.log(high))) if distribution.log
             else rng.uniform(low, high))
    return int(round(value)) if isinstance(distribution, IntDistribution) else float(value)


def synthetic_trial(rng: np.random.Generator, distributions: dict, ceiling: float):
    """One finished trial as `autodl tune` records it, with a plausible learning curve."""
    params = {name: sample(rng, d) for name, d in distributions.items()
              if name != "weight_decay"}
    if params["weight_decay_enabled"]:
        params["weight_decay"] = sample(rng, distributions["weight_decay"])
    # Good learning rates (near 3e-3) reach a high accuracy; the rest less so.
    skill = math.exp(-abs(math.log10(params["learning_rate"] / 3e-3)))
    final = min(ceiling, 0.1 + 0.85 * skill * rng.uniform(0.7, 1.0))
    state = rng.choice(["COMPLETE", "PRUNED", "FAIL"], p=[0.45, 0.53, 0.02])
    epochs = {"COMPLETE": int(rng.integers(4, EPOCHS + 1)), "FAIL": 1,
              "PRUNED": int(rng.choice([1, 2, 4]))}[state]
    history = []
    for epoch in range(1, epochs + 1):
        val = float(np.clip(final * (1 - math.exp(-epoch / 2)) + rng.normal(0, 0.01),
                            0.05, ceiling))
        history.append({"epoch": epoch, "loss": 2.3 * (1 - val) + 0.05,
                        "accuracy": min(1.0, val + 0.02), "val_loss": 2.3 * (1 - val) + 0.1,
                        "val_accuracy": val, "seconds": 0.3})
    hyperparameters = {k: v for k, v in params.items() if k != "weight_decay_enabled"}
    hyperparameters.setdefault("weight_decay", 0.0)
    attrs = {"history": history, "hyperparameters": hyperparameters,
             "params_count": int(params["units"] * 70), "stopped_epoch": epochs,
             "train_seconds": 0.3 * epochs}
    values = [record["val_accuracy"] for record in history]
    used = {name: distributions[name] for name in params}
    if state == "FAIL":
        attrs.update(fail_reason="diverged: loss became nan at epoch 1", fail_kind="diverged")
        return optuna.create_trial(state=TrialState.FAIL, params=params, distributions=used,
                                   user_attrs=attrs)
    intermediate = dict(enumerate(values, start=1))
    if state == "PRUNED":
        return optuna.create_trial(state=TrialState.PRUNED, params=params, distributions=used,
                                   user_attrs=attrs, intermediate_values=intermediate)
    attrs["best_epoch"] = values.index(max(values)) + 1
    return optuna.create_trial(value=max(values), params=params, distributions=used,
                               user_attrs=attrs, intermediate_values=intermediate)


def make_study(storage: str, trials: int) -> None:
    """One real trial with its stored model, then ``trials - 1`` synthetic ones."""
    study = optuna.create_study(study_name=STUDY, storage=storage, direction="maximize")
    study.enqueue_trial(GOOD)
    tune(TuneConfig(arch="mlp", trials=1, epochs=EPOCHS, pruner="none", storage=storage,
                    study=STUDY, seed=0), Quiet())
    study = optuna.load_study(study_name=STUDY, storage=storage)
    best = study.best_trial
    distributions = dict(best.distributions)
    decay = TRAINING_SPACE["weight_decay"]
    distributions["weight_decay"] = FloatDistribution(decay.low, decay.high, log=True)
    rng = np.random.default_rng(0)
    study.add_trials([synthetic_trial(rng, distributions, best.value - 0.005)
                      for _ in range(trials - 1)])


def time_figures(storage: str, out: Path) -> dict[str, float]:
    """Seconds to draw and render each figure, by file name (a report in this process)."""
    seconds: dict[str, float] = {}

    def timed(name, draw):
        def run(context, spec):
            start = time.perf_counter()
            figure = draw(context, spec)
            figure.set_size_inches(spec.size[0] / report.DPI, spec.size[1] / report.DPI)
            figure.savefig(io.BytesIO(), dpi=report.DPI, format="png")  # rendering is most
            seconds[name] = time.perf_counter() - start
            return figure
        return run

    for name, draw in list(report._DRAW.items()):
        report._DRAW[name] = timed(name, draw)
    report.write_report(storage, STUDY, out)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--keep", metavar="DIR", help="also copy the report here, to look at")
    args = parser.parse_args()
    setup_devices()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as folder:
        storage = f"sqlite:///{folder}/autodl.db"
        start = time.perf_counter()
        make_study(storage, args.trials)
        made = time.perf_counter() - start
        out = Path(folder) / "report"
        start = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "autodl", "report", STUDY, "--storage", storage,
             "--out", str(out)], capture_output=True, text=True, cwd=folder,
        )
        wall = time.perf_counter() - start
        if result.returncode != 0:
            sys.exit(f"autodl report failed:\n{result.stderr}")
        figures = time_figures(storage, Path(folder) / "again")
        if args.keep:
            shutil.copytree(out, args.keep, dirs_exist_ok=True)
    print(f"machine: {machine()}")
    print(f"study of {args.trials} trials made in {made:.1f}s; {result.stdout.strip()}")
    print(f"report seconds on {args.trials} trials (`autodl report`, wall): {wall:.1f}")
    print("drawing, per figure: " + ", ".join(
        f"{name.removesuffix('.png')} {seconds:.2f}s" for name, seconds in figures.items()))


if __name__ == "__main__":
    main()
