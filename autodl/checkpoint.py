"""Trial checkpoints: what a running trial needs to go on after its process is lost.

Every ``--checkpoint-every`` epochs a trial writes one file, ``trial-<N>.npz``, where
``N`` is the number of the first trial of its series (a retried trial keeps its first
attempt's checkpoint). It holds:

- every model variable (weights, and the random generators' states of dropout and
  augmentation layers) and every optimizer variable (the step count that a
  learning-rate schedule follows, the slots, a plateau-lowered learning rate);
- the state of the callbacks that keep one between epochs (early stopping's best value,
  its validation loss, wait count and best weights; the plateau reducer's);
- the epochs trained, their history, and the seed of the data order (each epoch's order
  is a function of that seed and the epoch: :class:`autodl.pipeline.InputPipeline`).

Keras's ``BackupAndRestore`` saves the weights, the optimizer and the epoch, but not
the other callbacks' state nor the data order; so the file is written here. It is
written beside, then renamed over, the previous one: a process killed while writing
leaves the previous checkpoint whole.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from autodl import recipe

#: The layout of the file; a checkpoint of another layout is not resumed from.
FORMAT = 1

#: What each stateful callback keeps between epochs: public attributes that its
#: ``on_train_begin`` resets (the Keras versions they are known in are bounded in
#: ``pyproject.toml``). Early stopping's best weights are saved as arrays.
CALLBACK_STATE: dict[type, tuple[str, ...]] = {
    recipe.EarlyStopping: ("wait", "stopped_epoch", "best", "best_epoch", "best_loss"),
    keras.callbacks.ReduceLROnPlateau: ("wait", "cooldown_counter", "best"),
}


class CheckpointUnusable(Exception):
    """A checkpoint that cannot be resumed from: damaged, truncated, or another model's."""


def _number(value: Any) -> Any:
    """A callback's state value as JSON holds it (NumPy scalars become Python numbers)."""
    return value.item() if isinstance(value, np.generic) else value


@dataclass
class Checkpoint:
    """One trial's state after ``epoch`` epochs.

    Attributes:
        epoch: Epochs trained.
        history: The trial's per-epoch records so far (see ``TrialAttr.HISTORY``).
        data_seed: The seed of every epoch's data order.
        model: The values of ``model.variables``.
        optimizer: The values of ``model.optimizer.variables``.
        callbacks: Each stateful callback's state, in the order of the trial's callbacks.
        best_weights: Early stopping's best weights, when they are not the model's own.
    """

    epoch: int
    history: list[dict[str, float]]
    data_seed: int
    model: list[np.ndarray]
    optimizer: list[np.ndarray]
    callbacks: list[dict[str, Any]] = field(default_factory=list)
    best_weights: list[np.ndarray] | None = None

    @classmethod
    def capture(cls, model: keras.Model, callbacks: list[keras.callbacks.Callback],
                epoch: int, history: list[dict[str, float]], data_seed: int) -> Checkpoint:
        """The state of a model in training and of its stateful callbacks."""
        states, best_weights = [], None
        for callback in stateful(callbacks):
            states.append({name: _number(getattr(callback, name))
                           for name in CALLBACK_STATE[type(callback)]})
            # At the best epoch the best weights are the model's own: not saved twice.
            if (getattr(callback, "best_weights", None) is not None
                    and callback.best_epoch != epoch - 1):
                best_weights = list(callback.best_weights)
        return cls(
            epoch=epoch, history=list(history), data_seed=data_seed,
            model=[keras.ops.convert_to_numpy(v) for v in model.variables],
            optimizer=[keras.ops.convert_to_numpy(v) for v in model.optimizer.variables],
            callbacks=states, best_weights=best_weights,
        )

    def check_fits(self, model: keras.Model) -> None:
        """Check the checkpoint holds this model's and optimizer's variables.

        Raises:
            CheckpointUnusable: If their number or a shape differs.
        """
        for what, saved, variables in (("model", self.model, model.variables),
                                       ("optimizer", self.optimizer, model.optimizer.variables)):
            shapes = [tuple(v.shape) for v in variables]
            if [array.shape for array in saved] != shapes:
                raise CheckpointUnusable(f"its {what} variables are not this model's")

    def restore(self, model: keras.Model, callbacks: list[keras.callbacks.Callback]) -> None:
        """Put the model, its optimizer and its callbacks back in the saved state.

        Call it after the callbacks' ``on_train_begin``, which resets them.
        """
        for variable, value in zip(model.variables, self.model, strict=True):
            variable.assign(value)
        for variable, value in zip(model.optimizer.variables, self.optimizer, strict=True):
            variable.assign(value)
        for callback, state in zip(stateful(callbacks), self.callbacks, strict=True):
            for name, value in state.items():
                setattr(callback, name, value)
            if getattr(callback, "restore_best_weights", False):
                callback.best_weights = (self.best_weights if self.best_weights is not None
                                         else model.get_weights())


def stateful(callbacks: list[keras.callbacks.Callback]) -> list[keras.callbacks.Callback]:
    """The callbacks whose state a checkpoint keeps, in order."""
    return [callback for callback in callbacks if type(callback) in CALLBACK_STATE]


class CheckpointStore:
    """The checkpoint files of one study's trials, in one folder.

    Args:
        directory: The study's checkpoint folder (created when the first is written).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, series: int) -> Path:
        """The checkpoint file of the trial series begun by trial ``series``."""
        return self.directory / f"trial-{series}.npz"

    def save(self, series: int, checkpoint: Checkpoint) -> None:
        """Write the checkpoint, replacing the series' previous one only once it is whole."""
        self.directory.mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT, "epoch": checkpoint.epoch, "history": checkpoint.history,
                "data_seed": checkpoint.data_seed, "callbacks": checkpoint.callbacks}
        arrays = {f"model/{i}": value for i, value in enumerate(checkpoint.model)}
        arrays.update({f"optimizer/{i}": value for i, value in enumerate(checkpoint.optimizer)})
        for i, value in enumerate(checkpoint.best_weights or ()):
            arrays[f"best/{i}"] = value
        path = self.path(series)
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        try:
            with open(partial, "wb") as file:
                np.savez(file, meta=np.array(json.dumps(meta)), **arrays)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)

    def load(self, series: int) -> Checkpoint | None:
        """The series' checkpoint, or ``None`` if it has none.

        Raises:
            CheckpointUnusable: If the file cannot be read whole, or is of another format.
        """
        path = self.path(series)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as file:
                meta = json.loads(str(file["meta"]))
                if meta.get("format") != FORMAT:
                    raise CheckpointUnusable(f"format {meta.get('format')}, not {FORMAT}")

                def arrays(prefix: str) -> list[np.ndarray]:
                    count = sum(name.startswith(f"{prefix}/") for name in file.files)
                    return [file[f"{prefix}/{i}"] for i in range(count)]

                best = arrays("best")
                return Checkpoint(
                    epoch=int(meta["epoch"]), history=meta["history"],
                    data_seed=int(meta["data_seed"]), model=arrays("model"),
                    optimizer=arrays("optimizer"), callbacks=meta["callbacks"],
                    best_weights=best or None,
                )
        except CheckpointUnusable:
            raise
        except (OSError, EOFError, ValueError, KeyError, TypeError,
                zipfile.BadZipFile) as error:
            raise CheckpointUnusable(f"{type(error).__name__}: {error}") from None

    def epoch(self, series: int) -> int:
        """Epochs the series' checkpoint holds (0 if it has none, or one that cannot be read)."""
        try:
            checkpoint = self.load(series)
        except CheckpointUnusable:
            return 0
        return 0 if checkpoint is None else checkpoint.epoch

    def delete(self, series: int) -> None:
        """Remove the series' checkpoint, if there is one."""
        self.path(series).unlink(missing_ok=True)

    def series(self) -> list[int]:
        """The series that have a checkpoint here."""
        if not self.directory.is_dir():
            return []
        return sorted(int(path.stem.removeprefix("trial-"))
                      for path in self.directory.glob("trial-*.npz")
                      if path.stem.removeprefix("trial-").isdigit())


class Checkpointer(keras.callbacks.Callback):
    """Writes the trial's checkpoint every ``every`` epochs; restores one when it begins.

    It must come last among the trial's callbacks: it saves their state after the epoch
    (a plateau reducer's lowered learning rate too), and restores it after their
    ``on_train_begin`` reset it.

    Args:
        store: Where checkpoints go.
        series: The trial series' first trial number (:meth:`CheckpointStore.path`).
        every: Epochs between checkpoints; 0 writes none.
        data_seed: The seed of the data order, kept in the checkpoint.
        history: The trial's per-epoch records (the list the trial monitor appends to).
        callbacks: The trial's other callbacks.
        resume: The checkpoint to continue from, if any.
    """

    def __init__(self, store: CheckpointStore, series: int, every: int, data_seed: int,
                 history: list[dict[str, float]], callbacks: list[keras.callbacks.Callback],
                 resume: Checkpoint | None = None) -> None:
        super().__init__()
        self.store = store
        self.series = series
        self.every = every
        self.data_seed = data_seed
        self.history = history
        self.callbacks = callbacks
        self.resume = resume

    def on_train_begin(self, logs: dict | None = None) -> None:
        """Restore the checkpoint to resume from, if any."""
        if self.resume is not None:
            self.resume.restore(self.model, self.callbacks)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        """Write the checkpoint, when one is due."""
        # None after the last epoch: the trial ends, and with it its checkpoint (a kill
        # in between costs that one epoch again).
        last = self.model.stop_training or epoch + 1 >= self.params["epochs"]
        if not self.every or (epoch + 1) % self.every or last:
            return
        self.store.save(self.series, Checkpoint.capture(
            self.model, self.callbacks, epoch + 1, self.history, self.data_seed))
