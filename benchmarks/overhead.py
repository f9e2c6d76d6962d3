"""Overhead of autodl against a plain Keras script: same model, data, epochs, one process.

    python benchmarks/overhead.py [--trials 10] [--epochs 10]

Both sides train the `mlp` configuration below on the digits data split autodl
makes. The plain side is what a user would write: build, compile, fit with
validation data. The autodl side is `autodl tune` with every hyperparameter fixed,
no pruning and no early stopping, so both train the same epochs. Plain runs
come before and after the study, so machine drift hits both sides alike.

Reports the ratio of mean `fit` times, and the per-trial time autodl spends outside
`fit` (building, compiling, storage writes, saving the best model).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import optuna  # noqa: E402
from _common import Quiet, machine  # noqa: E402

from autodl.config import Fixed, Space, TuneConfig  # noqa: E402
from autodl.datasets import load_dataset, make_splits  # noqa: E402
from autodl.runtime import setup_devices  # noqa: E402
from autodl.tuner import tune  # noqa: E402

FIXED = {"learning_rate": 1e-3, "batch_size": 32, "optimizer": "adam", "weight_decay": 0.0,
         "depth": 2, "units": 256, "activation": "relu", "dropout": 0.2}


def plain_keras_fit(splits, epochs: int) -> float:
    """Seconds of `fit` for the same network written by hand."""
    keras.backend.clear_session()
    inputs = keras.Input(splits.input_shape)
    x = keras.layers.Flatten()(inputs)
    for units in (256, 128):
        x = keras.layers.Dense(units, activation="relu")(x)
        x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(splits.num_classes, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(splits.x_train, splits.y_train, validation_data=(splits.x_val, splits.y_val),
              batch_size=32, epochs=epochs, verbose=0)
    return time.perf_counter() - start


class Timer(Quiet):
    """Wall time per trial: from the previous trial's end (or the study's start) to its end."""

    def __init__(self):
        super().__init__()
        self.last = 0.0
        self.walls: list[float] = []

    def started(self, *args):
        self.last = time.perf_counter()

    def trial_finished(self, result, best):
        now = time.perf_counter()
        self.walls.append(now - self.last)
        self.last = now


def autodl_trials(folder: str, trials: int, epochs: int) -> tuple[list[float], list[float]]:
    """(fit seconds, wall seconds outside fit) of each trial of one autodl study.

    A trial's wall time runs from the previous trial's end, so it includes sampling,
    storage writes, building, compiling, saving the best model and the periodic
    garbage collection.
    """
    storage = f"sqlite:///{folder}/autodl.db"
    config = TuneConfig(arch="mlp", trials=trials, epochs=epochs, patience=epochs,
                        pruner="none", storage=storage, study="overhead", seed=0,
                        space=Space({k: Fixed(v) for k, v in FIXED.items()}))
    timer = Timer()
    tune(config, timer)
    study = optuna.load_study(study_name="overhead", storage=storage)
    fits = [trial.user_attrs["train_seconds"] for trial in study.trials]
    return fits, [wall - fit for wall, fit in zip(timer.walls, fits, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    setup_devices()
    splits = make_splits(load_dataset("digits"), seed=0)
    plain_keras_fit(splits, 1)  # warm-up: first-use costs of TensorFlow on both sides
    # Plain runs before and after the study, so drift over the run hits both sides.
    plain = [plain_keras_fit(splits, args.epochs) for _ in range(args.trials)]
    with tempfile.TemporaryDirectory() as folder:
        fits, outside = autodl_trials(folder, args.trials, args.epochs)
    plain += [plain_keras_fit(splits, args.epochs) for _ in range(args.trials)]
    ratio = statistics.mean(fits) / statistics.mean(plain)
    print(f"machine: {machine()}")
    print(f"plain Keras fit: mean {statistics.mean(plain):.3f}s "
          f"(min {min(plain):.3f}s) over {len(plain)} runs of {args.epochs} epochs")
    print(f"autodl fit:      mean {statistics.mean(fits):.3f}s (min {min(fits):.3f}s)")
    print(f"fit time ratio autodl/plain: {ratio:.3f} (min/min {min(fits) / min(plain):.3f})")
    print(f"autodl time outside fit per trial: mean {statistics.mean(outside):.3f}s, "
          f"max {max(outside):.3f}s")


if __name__ == "__main__":
    main()
