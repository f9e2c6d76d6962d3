"""The training recipe around a model: its learning-rate schedule and its callbacks.

The core's ``lr_schedule`` hyperparameter picks how the learning rate moves over a
trial's training steps (``epochs × ceil(train examples / batch_size)``):

* ``constant``: ``learning_rate`` throughout; ``lr_plateau`` may then halve it (or
  whatever ``lr_plateau_factor`` says) when ``val_loss`` stops improving for
  ``lr_plateau_patience`` epochs (Keras ``ReduceLROnPlateau``);
* ``exponential``: multiplied by ``lr_decay_rate`` every epoch, smoothly
  (Keras ``ExponentialDecay``);
* ``step``: divided by 10 after half of the steps and again after three quarters;
* ``cosine``: a cosine from ``learning_rate`` down to 0 (Keras ``CosineDecay``),
  after a linear warm-up from 0 over ``lr_warmup_fraction`` of the steps;
* ``cyclic``: ``lr_cycles`` equal cosine cycles, each restarting at ``learning_rate``
  (Keras ``CosineDecayRestarts``).

Early stopping (:class:`EarlyStopping`) and TensorBoard logging are here too:
TensorBoard's own modules load only when it is asked for.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import keras

#: Where the ``step`` schedule drops, as fractions of all training steps, and by how much.
STEP_DROPS = (0.5, 0.75)
STEP_FACTOR = 0.1
#: What ``ReduceLROnPlateau`` watches, as the Keras guides (and its default) do.
PLATEAU_MONITOR = "val_loss"
#: Of epochs tied in the early-stopping monitor, the one of the lowest of this is kept.
TIE_BREAKER = "val_loss"


def learning_rate(
    training: dict[str, Any], steps_per_epoch: int, epochs: int
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The optimizer's learning rate: a number, or a schedule over the training steps.

    Args:
        training: The trial's training hyperparameters (``learning_rate``,
            ``lr_schedule`` and the schedule's own).
        steps_per_epoch: Batches per epoch.
        epochs: The most epochs the trial trains.
    """
    rate = training["learning_rate"]
    total = steps_per_epoch * epochs
    schedules = keras.optimizers.schedules
    schedule = training.get("lr_schedule", "constant")
    if schedule == "constant":
        return rate
    if schedule == "exponential":
        return schedules.ExponentialDecay(rate, steps_per_epoch, training["lr_decay_rate"])
    if schedule == "step":
        boundaries = [int(total * fraction) for fraction in STEP_DROPS]
        values = [rate * STEP_FACTOR**drops for drops in range(len(STEP_DROPS) + 1)]
        return schedules.PiecewiseConstantDecay(boundaries, values)
    if schedule == "cosine":
        warmup = round(total * training["lr_warmup_fraction"])
        if not warmup:
            return schedules.CosineDecay(rate, total)
        return schedules.CosineDecay(0.0, total - warmup, warmup_target=rate,
                                     warmup_steps=warmup)
    if schedule == "cyclic":
        period = math.ceil(total / training["lr_cycles"])
        return schedules.CosineDecayRestarts(rate, period, t_mul=1.0, m_mul=1.0)
    raise ValueError(f"unknown lr_schedule {schedule!r}")


def plateau_callbacks(training: dict[str, Any]) -> list[keras.callbacks.Callback]:
    """``ReduceLROnPlateau`` when the trial chose it, else nothing."""
    if not training.get("lr_plateau"):
        return []
    return [keras.callbacks.ReduceLROnPlateau(
        PLATEAU_MONITOR, factor=training["lr_plateau_factor"],
        patience=training["lr_plateau_patience"],
    )]


class EarlyStopping(keras.callbacks.EarlyStopping):
    """Keras's early stopping, keeping of the epochs tied at the best value the lowest loss.

    On a few hundred validation images (or a few dozen) epochs often tie in accuracy, and
    Keras keeps the first of them: often an undertrained one. On the 200 flower photos
    (16 validation images) a trial tied at 75% in its second and fifth epochs, validation
    loss 0.80 and 0.56; the second epoch's weights, the ones kept, scored 42.5% on the
    test images. Trials tied in accuracy are told apart the same way
    (:func:`autodl.storage.accuracy_rank`). Patience still counts the epochs without a
    higher value: a tied epoch of lower loss changes which weights are kept, not how long
    the trial trains.

    Args:
        monitor: The log to maximise (the trial's value).
        patience: Epochs without a higher value before training stops.
    """

    def __init__(self, monitor: str, patience: int) -> None:
        super().__init__(monitor, mode="max", patience=patience, restore_best_weights=True)
        #: The validation loss at ``best_epoch``.
        self.best_loss = math.inf

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Keras's step; then a tied epoch of lower loss replaces the kept weights."""
        super().on_epoch_end(epoch, logs)
        logs = logs or {}
        loss = logs.get(TIE_BREAKER, math.inf)
        if self.best_epoch == epoch:  # a higher value (or the first)
            self.best_loss = loss
        elif logs.get(self.monitor) == self.best and loss < self.best_loss:
            self.best_epoch, self.best_loss = epoch, loss
            self.best_weights = self.model.get_weights()


def tensorboard_callbacks(
    run_dir: Path, hyperparameters: dict[str, Any], trial_id: str
) -> list[keras.callbacks.Callback]:
    """Callbacks that log one run for TensorBoard: per-epoch scalars and the run's values.

    Keras's ``TensorBoard`` writes the scalars under ``run_dir/train`` and
    ``run_dir/validation``; the HParams plugin's summary goes in ``run_dir`` itself,
    so ``tensorboard --logdir`` compares runs by hyperparameter.
    """
    return [
        keras.callbacks.TensorBoard(str(run_dir)),
        _HParamsLogger(run_dir, hyperparameters, trial_id),
    ]


class _HParamsLogger(keras.callbacks.Callback):
    """Writes the run's hyperparameters for TensorBoard's HParams plugin."""

    def __init__(self, run_dir: Path, hyperparameters: dict[str, Any], trial_id: str) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.hyperparameters = hyperparameters
        self.trial_id = trial_id
        self.writer: Any = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        import tensorflow as tf
        from tensorboard.plugins.hparams import api as hparams_api

        self.writer = tf.summary.create_file_writer(str(self.run_dir))
        with self.writer.as_default():
            hparams_api.hparams(self.hyperparameters, trial_id=self.trial_id)
        self.writer.flush()  # on disk now, even if training then fails

    def on_train_end(self, logs: dict | None = None) -> None:
        self.writer.close()
