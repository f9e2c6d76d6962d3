"""The trial runner: one Optuna trial builds the plugin's model, trains it and records it.

What it records on each trial is listed, and named, by :class:`autodl.storage.TrialAttr`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import keras
import numpy as np
import optuna

from autodl import recipe
from autodl.checkpoint import Checkpoint, Checkpointer, CheckpointStore, CheckpointUnusable
from autodl.config import TRAINING_SPACE, Space, is_active
from autodl.cost import CostLimit, epoch_flops, forward_flops
from autodl.cost_halving import CostHalvingPruner
from autodl.datasets import Splits
from autodl.deployment import Deployment, architecture_digest, measure
from autodl.hyperparameters import OptunaHyperParameters
from autodl.objectives import ACCURACY, LATENCY, OBJECTIVES, PARAMS, SIZE, dominates
from autodl.optimizers import OPTIMIZERS
from autodl.pareto_halving import ParetoHalvingPruner
from autodl.pipeline import InputPipeline
from autodl.plugin import overrides_fit, owns_compile
from autodl.runtime import process_identity, training_device
from autodl.storage import FailKind, TrialAttr, failure_attrs

MONITOR = "val_accuracy"
_HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")
#: The batch size Keras's ``fit`` uses when given none. A hypermodel that overrides
#: ``fit`` chooses its batch size there, after autodl compiled the model: the learning-rate
#: schedule counts its steps with this one, or with a ``batch_size`` that ``build`` declared.
KERAS_BATCH_SIZE = 32


class TrialFailed(Exception):
    """Training went wrong in a way that fails this trial only (e.g. the loss became NaN)."""

    def __init__(self, reason: str, kind: str) -> None:
        super().__init__(reason)
        self.kind = kind


class EpochListener(Protocol):
    """Told about every finished epoch, for live progress."""

    def epoch_end(self, trial_number: int, epoch: int, record: dict[str, float]) -> None:
        """Called after each epoch with that epoch's history record."""

    def trial_resumed(self, trial_number: int, series: int, epoch: int) -> None:
        """A retried trial continues trial ``series`` at ``epoch`` (0: no checkpoint)."""

    def warning(self, text: str) -> None:
        """Something went wrong that the trial works around (one line)."""


def build_model(hypermodel: Any, hp: OptunaHyperParameters) -> keras.Model:
    """Run ``hypermodel.build(hp)`` and check it returned a Keras model.

    Raises:
        TypeError: If ``build`` returned something else.
    """
    model = hypermodel.build(hp)
    if not isinstance(model, keras.Model):
        raise TypeError(f"build(hp) returned {type(model).__name__}, not a keras.Model")
    return model


def declare_training(hp: OptunaHyperParameters, hypermodel: Any) -> dict[str, Any]:
    """Declare the core's training hyperparameters (just the batch size for self-compilers).

    A hypermodel that overrides ``fit`` batches its data there, so the core declares no
    batch size for it. A conditional one (``TRAINING_CONDITIONS``) is declared, and so
    suggested, only when its parent took one of its values.
    """
    names = ["batch_size"] if owns_compile(hypermodel) else list(TRAINING_SPACE)
    if overrides_fit(hypermodel):
        names.remove("batch_size")
    training: dict[str, Any] = {}
    for name in names:
        if is_active(name, training):
            training[name] = hp.declare(name, TRAINING_SPACE[name])
    return training


def dry_build(hypermodel: Any, space: Space, low_end: bool = False) -> OptunaHyperParameters:
    """Build once with default values, to list and check a plugin's hyperparameters.

    Args:
        hypermodel: The plugin's hypermodel.
        space: The space searched.
        low_end: Build the plugin's numeric hyperparameters at their lowest value
            instead of their defaults (see :class:`OptunaHyperParameters`).

    Returns:
        The hyperparameters, with ``specs`` holding every one that was declared.
    """
    hp = OptunaHyperParameters(space, low_end=low_end)
    declare_training(hp, hypermodel)
    try:
        build_model(hypermodel, hp)
    finally:
        keras.backend.clear_session()
    return hp


def float32_outputs(model: keras.Model) -> keras.Model:
    """The model, with a float32 cast appended to any output that is not float32.

    Under mixed precision layers compute in float16; the loss and the probabilities
    need float32, whatever the plugin's last layer is. A model its plugin compiled is
    compiled again the same way.
    """
    if all(keras.backend.standardize_dtype(t.dtype) == "float32" for t in model.outputs):
        return model
    outputs = [keras.layers.Activation("linear", dtype="float32")(t) for t in model.outputs]

    def single(tensors: list) -> Any:  # one input or output stays one, not a list of one
        return tensors[0] if len(tensors) == 1 else tensors

    cast = keras.Model(single(model.inputs), single(outputs), name=model.name)
    if model.compiled:
        cast.compile_from_config(model.get_compile_config())
    return cast


def compile_model(model: keras.Model, training: dict[str, Any], examples: int,
                  epochs: int) -> None:
    """Compile with the core's optimizer, learning-rate schedule and loss.

    Args:
        model: The plugin's uncompiled model.
        training: The trial's training hyperparameters.
        examples: Training examples per epoch (for the schedule's step count).
        epochs: The most epochs it trains (the schedule's horizon).
    """
    steps_per_epoch = math.ceil(examples / training["batch_size"])
    model.compile(
        optimizer=OPTIMIZERS[training["optimizer"]](
            recipe.learning_rate(training, steps_per_epoch, epochs),
            training["weight_decay"] or None,
        ),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


def dtype_policy(mixed_precision: bool) -> str:
    """The Keras dtype policy of a study: ``mixed_float16`` with mixed precision."""
    return "mixed_float16" if mixed_precision else "float32"


def trial_seed(seed: int | None, number: int) -> int | None:
    """The seed of trial ``number`` of a study seeded with ``seed`` (``None``: unseeded)."""
    return None if seed is None else seed + number


def prepare_model(
    hypermodel: Any, hp: OptunaHyperParameters, policy: str, seed: int | None,
    examples: int, epochs: int,
) -> tuple[keras.Model, dict[str, Any]]:
    """Make a trial's model, ready to train: the one place a model is prepared.

    The trial runner and ``autodl export --retrain`` both call it, so a retrained model
    is made exactly as its trial's was.

    Args:
        hypermodel: The plugin's hypermodel.
        hp: The hyperparameters the model is built with.
        policy: The Keras dtype policy (:func:`dtype_policy`).
        seed: Seeds Keras, NumPy and Python before the build (:func:`trial_seed`);
            ``None`` leaves them as they are.
        examples: Training examples per epoch (for the schedule's step count).
        epochs: The most epochs it trains (the schedule's horizon).

    Returns:
        The model, compiled unless its plugin owns compilation, and the training
        hyperparameters declared for it.
    """
    # Free the previous trial's graph and layers so memory does not grow per trial.
    # The garbage itself is collected every few trials by the orchestrator.
    keras.backend.clear_session(free_memory=False)
    keras.config.set_dtype_policy(policy)  # clear_session resets it
    if seed is not None:
        keras.utils.set_random_seed(seed)
    training = declare_training(hp, hypermodel)
    model = build_model(hypermodel, hp)
    if policy != "float32":
        model = float32_outputs(model)
    if not owns_compile(hypermodel):
        # A fit of the hypermodel's own picks the batch size later: see KERAS_BATCH_SIZE.
        batch_size = hp.values.get("batch_size", KERAS_BATCH_SIZE)
        compile_model(model, {"batch_size": batch_size, **training}, examples, epochs)
    return model, training


def prebuild_training_state(model: keras.Model, data_batch: tuple[Any, Any]) -> bool:
    """Build the optimizer's and metrics' variables before training, where Keras allows it.

    Keras does so itself for distributed training, with ``Trainer._symbolic_build``: a
    private method (its use is fenced here, the versions it is known in are bounded in
    ``pyproject.toml``). Built lazily inside the first training step instead, these
    variables leave TensorFlow graphs behind that outlive ``clear_session``: about
    5 MiB per trial. So a Keras without the method trains the same, with that memory cost.

    Args:
        model: The compiled model.
        data_batch: One example and its label, as training feeds them.

    Returns:
        Whether the variables were built now.
    """
    symbolic_build = getattr(model, "_symbolic_build", None)
    if symbolic_build is None:
        return False
    symbolic_build(data_batch=data_batch)
    return True


def uses_one_hot_labels(model: keras.Model) -> bool:
    """Whether a model compiled by its plugin expects one-hot labels."""
    loss = getattr(model, "loss", None)
    name = loss if isinstance(loss, str) else getattr(loss, "name", type(loss).__name__)
    return "categorical" in str(name).lower() and "sparse" not in str(name).lower()


def encode_labels(model: keras.Model, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Labels in the form the model's loss expects."""
    if uses_one_hot_labels(model):
        return keras.utils.to_categorical(labels, num_classes)
    return labels


class _TrialMonitor(keras.callbacks.Callback):
    """Records each epoch, stops on a non-finite loss, reports to Optuna and asks to prune."""

    def __init__(self, trial: optuna.Trial, listener: EpochListener,
                 deadline: float | None = None) -> None:
        super().__init__()
        self.trial = trial
        self.listener = listener
        self.deadline = deadline
        self.history: list[dict[str, float]] = []
        self.failure: str | None = None
        self.pruned_at: int | None = None
        self.stopped_by_budget = False
        self._epoch_start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        if MONITOR not in logs:
            raise KeyError(f"training logs have no {MONITOR!r} (got {', '.join(logs)})")
        record = {"epoch": epoch + 1}
        record.update({k: float(logs[k]) for k in _HISTORY_KEYS if k in logs})
        # The rate at the epoch's end: a schedule's, or what ReduceLROnPlateau left.
        rate = keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
        record["learning_rate"] = float(rate)
        record["seconds"] = round(time.perf_counter() - self._epoch_start, 4)
        self.history.append(record)
        self.listener.epoch_end(self.trial.number, epoch + 1, record)
        # Checked per epoch, not per batch: a per-batch hook makes Keras copy the
        # logs to Python after every step, which slows small models markedly.
        if not math.isfinite(record.get("loss", 0.0)):
            self.failure = f"loss became {record['loss']} at epoch {epoch + 1}"
            self.model.stop_training = True
            return
        if report_epochs(self.trial, self.history, len(self.history) - 1):
            self.pruned_at = epoch + 1
            self.model.stop_training = True
        elif (self.deadline is not None and epoch + 1 < self.params.get("epochs", 0)
              and time.monotonic() + record["seconds"] > self.deadline):
            self.model.stop_training = True  # another epoch would overrun the time budget
            self.stopped_by_budget = True


class _FirstEpochRungs(keras.callbacks.Callback):
    """Judges a dear trial at the cost rungs inside its first epoch, and stops it there.

    At each rung (see :meth:`CostHalvingPruner.rungs_within_first_epoch`) it measures the
    model's validation accuracy so far and asks the pruner. A trial below the rung stops
    at once: Keras then validates the part-epoch, and the trial monitor reports it as
    epoch 1. Only dear trials get this callback: a per-batch hook makes Keras copy the
    logs to Python after every step, which would slow small models.

    Args:
        trial: The trial.
        pruner: The study's pruner.
        cost: The trial's training FLOPs per epoch.
        budgets: The rungs to judge at (training FLOPs), lowest first.
        validation: The validation images and their labels (class indices).
    """

    def __init__(self, trial: optuna.Trial, pruner: CostHalvingPruner, cost: float,
                 budgets: list[float], validation: tuple[np.ndarray, np.ndarray]) -> None:
        super().__init__()
        self.trial = trial
        self.pruner = pruner
        self.cost = cost
        self.budgets = list(budgets)
        self.validation = validation
        #: The part of its first epoch the trial had trained when it fell below a rung.
        self.stopped_at: float | None = None

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        steps = self.params.get("steps")
        if not self.budgets or not steps:
            return
        done = (batch + 1) / steps
        crossed = [budget for budget in self.budgets if budget <= done * self.cost]
        if not crossed:
            return
        del self.budgets[:len(crossed)]
        if self.pruner.falls_below(self.trial.study, self.trial.number, self.cost,
                                   self._accuracy(), crossed):
            self.stopped_at = done
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.budgets = []  # its first epoch is over: the pruner judges epochs now

    def _accuracy(self) -> float:
        images, labels = self.validation
        # Batch by batch, without a dataset: no tf.data iterator to wait for.
        predicted = np.concatenate([
            np.argmax(self.model.predict_on_batch(images[start:start + 256]), axis=-1)
            for start in range(0, len(images), 256)
        ])
        return float(np.mean(predicted == labels))


def _measure_once_per_architecture(trial: optuna.Trial, model: keras.Model) -> Deployment:
    """Record the model's size and latency: an earlier trial's of its architecture, if any.

    Measured again, one architecture differs only by the timer's noise, which on real
    MNIST made a worse copy of the fastest model look faster: it sat on the Pareto
    front, and no trial counted as no dearer than it, so the pruner could not judge it.
    """
    digest = architecture_digest(model)
    trial.set_user_attr(TrialAttr.ARCHITECTURE, digest)
    recorded = (TrialAttr.SIZE_BYTES, TrialAttr.LATENCY_MS, TrialAttr.LATENCY_RUNTIME)
    for other in trial.study.get_trials(deepcopy=False):
        attrs = other.user_attrs
        # All three: another worker may be between recording one and the next.
        if (other.number != trial.number and attrs.get(TrialAttr.ARCHITECTURE) == digest
                and all(attr in attrs for attr in recorded)):
            deployment = Deployment(*(attrs[attr] for attr in recorded))
            trial.set_user_attr(TrialAttr.MEASURED_ON_TRIAL, other.number)
            break
    else:
        deployment = measure(model)
    for attr, value in zip(recorded, (deployment.size_bytes, deployment.latency_ms,
                                      deployment.runtime), strict=True):
        trial.set_user_attr(attr, value)
    return deployment


def report_epochs(trial: optuna.Trial, history: list[dict[str, float]], first: int) -> bool:
    """Report the epochs of ``history`` from index ``first`` on, for the study's pruner.

    Optuna's pruning takes one objective: a multi-objective trial cannot report (Optuna
    raises), so its history is recorded as it grows, and the study's pruner
    (:class:`autodl.pareto_halving.ParetoHalvingPruner`) reads it there, and its
    verdict is recorded as the trial's ``pruned_because``.

    Returns:
        Whether the pruner stops the trial now.
    """
    study = trial.study
    if len(study.directions) == 1:
        for record in history[first:]:
            trial.report(record[MONITOR], step=record["epoch"])
        return trial.should_prune()
    trial.set_user_attr(TrialAttr.HISTORY, history)
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    frozen = next(t for t in running if t.number == trial.number)
    if not isinstance(study.pruner, ParetoHalvingPruner):
        return study.pruner.prune(study, frozen)
    why = study.pruner.verdict(study, frozen)
    if why is not None:
        trial.set_user_attr(TrialAttr.PRUNED_BECAUSE, f"pruned at epoch {len(history)}: {why}")
    return why is not None


def is_new_best(study: optuna.Study, values: list[float]) -> bool:
    """Whether a trial of ``values`` is the study's best, or on its Pareto front, so far."""
    completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    maximize = [direction == optuna.study.StudyDirection.MAXIMIZE
                for direction in study.directions]
    # Ties count as best: any tied trial may be reported best, and keeps its model.
    return not any(dominates(trial.values, values, maximize) for trial in completed)


def _record_failure(trial: optuna.Trial, kind: str, reason: str) -> None:
    for key, value in failure_attrs(kind, reason).items():
        trial.set_user_attr(key, value)


class TrialRunner:
    """The Optuna objective: trains one model per trial and returns its best val accuracy.

    Args:
        hypermodel: The plugin's ``keras_tuner.HyperModel`` for this task.
        splits: The study's data, shared by every trial.
        space: The user's search-space settings.
        epochs: The most epochs a trial trains.
        patience: Epochs without improvement before early stopping.
        seed: Base seed; trial ``n`` seeds Keras and NumPy with ``seed + n``.
        listener: Told about each epoch.
        save_model: Called with the trial and its model when it becomes the study's best.
        tensorboard: A folder for TensorBoard logs, one run per trial in
            ``<folder>/<study>/trial-NNNNN``; ``None`` for none.
        mixed_precision: Compute in float16 (Keras's ``mixed_float16`` policy), with
            float32 variables and outputs.
        deadline: ``time.monotonic()`` of the time budget's end: a trial stops (and
            completes with its best epoch) when another epoch would overrun it.
        checkpoints: Where trials write their checkpoints and retried trials find them
            (``None``: no checkpoints).
        checkpoint_every: Epochs between a trial's checkpoints (0: none written).
        objectives: What the study tunes for (:data:`autodl.objectives.OBJECTIVES` names,
            accuracy first); with more than one, a trial returns a value of each.
        limits: Caps on deployment objectives, by name, in the objective's units: a
            model over one is pruned before it trains.
    """

    def __init__(
        self,
        hypermodel: Any,
        splits: Splits,
        space: Space,
        epochs: int,
        patience: int,
        seed: int | None,
        listener: EpochListener,
        save_model: Callable[[optuna.Trial, keras.Model], None],
        tensorboard: str | None = None,
        mixed_precision: bool = False,
        deadline: float | None = None,
        checkpoints: CheckpointStore | None = None,
        checkpoint_every: int = 1,
        objectives: tuple[str, ...] = (ACCURACY,),
        limits: dict[str, float] | None = None,
    ) -> None:
        self.hypermodel = hypermodel
        self.splits = splits
        self.pipeline = InputPipeline(splits)  # shared by every trial of this process
        self.tensorboard = tensorboard
        self.policy = dtype_policy(mixed_precision)
        self.space = space
        self.epochs = epochs
        self.patience = patience
        self.seed = seed
        self.listener = listener
        self.save_model = save_model
        # Prunes, untrained, a model too dear for the task.
        self.cost_limit = CostLimit.for_task(splits.input_shape)
        self.deadline = deadline
        self.checkpoints = checkpoints
        self.checkpoint_every = checkpoint_every
        self.objectives = objectives
        self.limits = limits or {}

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        """Run one trial; raise to mark it FAIL (with ``fail_reason``) or PRUNED.

        A retried trial (``TrialAttr.RESUMES``) continues its series' checkpoint. The
        checkpoint goes when the trial ends, except on Ctrl-C: the next run resumes it.
        """
        series = trial.user_attrs.get(TrialAttr.RESUMES, trial.number)
        try:
            value = self._run(trial, series)
        except optuna.TrialPruned:
            self._forget(series)
            raise
        except KeyboardInterrupt:
            _record_failure(trial, FailKind.INTERRUPTED, "stopped by the user")
            raise
        except Exception as error:
            self._forget(series)
            kind = error.kind if isinstance(error, TrialFailed) else type(error).__name__
            _record_failure(trial, kind, str(error))
            raise
        self._forget(series)
        return value

    def _forget(self, series: int) -> None:
        if self.checkpoints is not None:
            self.checkpoints.delete(series)

    def _resume(self, trial: optuna.Trial, series: int, model: keras.Model,
                monitor: _TrialMonitor) -> Checkpoint | None:
        """Take up a retried trial's past, if its series left a usable checkpoint.

        Its epochs join the history and are reported again, so the pruner judges the
        trial as if it had never stopped.

        Returns:
            The checkpoint to continue from (``None``: train from epoch 0).
        """
        if TrialAttr.RESUMES not in trial.user_attrs:
            return None
        checkpoint = None
        try:
            if self.checkpoints is not None:
                if not model.optimizer.built:  # a plugin's fit builds it inside fit
                    model.optimizer.build(model.trainable_variables)
                checkpoint = self.checkpoints.load(series)
            if checkpoint is not None:
                checkpoint.check_fits(model)
                if checkpoint.epoch >= self.epochs:
                    raise CheckpointUnusable(f"it holds {checkpoint.epoch} epochs, and "
                                             f"--epochs is {self.epochs}")
        except CheckpointUnusable as problem:
            self.listener.warning(f"trial {trial.number}: the checkpoint of trial {series} "
                                  f"cannot be resumed ({problem}); it starts from epoch 0")
            checkpoint = None
        epoch = 0 if checkpoint is None else checkpoint.epoch
        trial.set_user_attr(TrialAttr.RESUMED_FROM_EPOCH, epoch)
        self.listener.trial_resumed(trial.number, series, epoch)
        if checkpoint is None:
            return None
        monitor.history.extend(checkpoint.history)
        if report_epochs(trial, monitor.history, 0):  # where it was: no epoch more
            monitor.pruned_at = checkpoint.epoch
        return checkpoint

    def _judge_cost(self, trial: optuna.Trial, model: keras.Model) -> int:
        """Record the model's cost; prune it untrained if it is beyond the cost limit.

        The cost is also an Optuna constraint, so the sampler learns to avoid dear
        configurations instead of suggesting them again.

        Returns:
            The model's training FLOPs per epoch.
        """
        flops = forward_flops(model)
        cost = epoch_flops(flops, len(self.splits.y_train))
        trial.set_user_attr(TrialAttr.FLOPS, flops)
        trial.set_user_attr(TrialAttr.EPOCH_FLOPS, cost)
        if "cost" not in trial.constraints:  # a retried trial carries its lost run's
            trial.set_constraint("cost", self.cost_limit.excess(flops))
        problem = self.cost_limit.problem(flops)
        if problem:
            trial.set_user_attr(TrialAttr.STOPPED_EPOCH, 0)
            trial.set_user_attr(TrialAttr.PRUNED_BECAUSE, problem)
            raise optuna.TrialPruned(problem)
        return cost

    def _first_epoch_rungs(self, trial: optuna.Trial, cost: int,
                           checkpoint: Checkpoint | None) -> _FirstEpochRungs | None:
        """The callback that judges a dear trial inside its first epoch, if it needs one."""
        pruner = trial.study.pruner
        if not isinstance(pruner, CostHalvingPruner) or checkpoint is not None:
            return None
        budgets = pruner.rungs_within_first_epoch(trial.study, trial.number, cost)
        if not budgets:
            return None
        return _FirstEpochRungs(trial, pruner, cost, budgets,
                                (self.splits.x_val, self.splits.y_val))

    def _judge_deployment(self, trial: optuna.Trial, model: keras.Model) -> list[float]:
        """Measure what deployment costs the study needs; prune the model if over a limit.

        Each limit is an Optuna constraint (the measure over the limit, less one), so the
        sampler learns to avoid what breaks it. The parameter count is checked first:
        it needs no export.

        Returns:
            The model's value of each deployment objective, in the study's order.
        """
        measured: dict[str, float] = {PARAMS: model.count_params()}
        problem = self._over_limits(trial, measured)
        if not problem and {SIZE, LATENCY} & (set(self.objectives) | set(self.limits)):
            deployment = _measure_once_per_architecture(trial, model)
            measured.update({SIZE: deployment.size_bytes, LATENCY: deployment.latency_ms})
            problem = self._over_limits(trial, measured)
        if problem:
            trial.set_user_attr(TrialAttr.STOPPED_EPOCH, 0)
            trial.set_user_attr(TrialAttr.PRUNED_BECAUSE, problem)
            raise optuna.TrialPruned(problem)
        return [measured[name] for name in self.objectives[1:]]

    def _over_limits(self, trial: optuna.Trial, measured: dict[str, float]) -> str | None:
        """Set the constraints of the measured limits; say which one the model breaks."""
        problems = []
        for name, limit in self.limits.items():
            if name not in measured:
                continue
            objective = OBJECTIVES[name]
            key = objective.limit.removeprefix("--")
            if key not in trial.constraints:  # a retried trial carries its lost run's
                trial.set_constraint(key, measured[name] / limit - 1)
            if measured[name] > limit:
                problems.append(
                    f"over {objective.limit} {limit / objective.per_unit:g}: "
                    f"{measured[name] / objective.per_unit:.4g} {objective.unit}")
        return "; ".join(problems) or None

    def _fit(self, hp: OptunaHyperParameters, model: keras.Model, training: dict[str, Any],
             callbacks: list[keras.callbacks.Callback], data_seed: int,
             first_epoch: int) -> None:
        """Train from ``first_epoch``: with the hypermodel's own ``fit`` if it has one.

        The hypermodel's ``fit`` is called as KerasTuner's tuners call it (the ``hp``, the
        model, the training data, then ``validation_data``, ``epochs`` and ``callbacks``,
        and ``initial_epoch`` when it resumes), with NumPy arrays: it may choose the batch
        size, and its data order is its own. What it returns is not used; the trial
        monitor among the callbacks records every epoch.
        """
        splits = self.splits
        if overrides_fit(self.hypermodel):
            y_train, y_val = (encode_labels(model, y, splits.num_classes)
                              for y in (splits.y_train, splits.y_val))
            resumed = {"initial_epoch": first_epoch} if first_epoch else {}
            self.hypermodel.fit(
                hp, model, splits.x_train, y_train,
                validation_data=(splits.x_val, y_val),
                epochs=self.epochs,
                callbacks=callbacks,
                verbose=0,
                **resumed,
            )
            return
        batch_size, one_hot = training["batch_size"], uses_one_hot_labels(model)
        model.fit(
            self.pipeline.train(batch_size, data_seed, self.epochs, first_epoch, one_hot),
            validation_data=self.pipeline.validation(batch_size, one_hot),
            steps_per_epoch=self.pipeline.steps_per_epoch(batch_size),
            initial_epoch=first_epoch,
            epochs=self.epochs,
            callbacks=callbacks,
            verbose=0,
            shuffle=False,  # the pipeline shuffles; Keras cannot shuffle a dataset
        )

    def _run(self, trial: optuna.Trial, series: int) -> float | list[float]:
        # First: a run that finds this trial RUNNING and its process gone knows it is lost.
        trial.set_user_attr(TrialAttr.PROCESS, process_identity())
        hp = OptunaHyperParameters(self.space, trial)
        # Seeded as its series' first trial: a retry without a checkpoint repeats it.
        seed = trial_seed(self.seed, series)
        model, training = prepare_model(
            self.hypermodel, hp, self.policy, seed, len(self.splits.y_train), self.epochs,
        )
        trial.set_user_attr(TrialAttr.HYPERPARAMETERS, dict(hp.values))
        trial.set_user_attr(TrialAttr.PARAMS_COUNT, int(model.count_params()))
        trial.set_user_attr(TrialAttr.DEVICE, training_device())
        cost = self._judge_cost(trial, model)
        deployment = self._judge_deployment(trial, model)
        splits, classes = self.splits, self.splits.num_classes
        prebuild_training_state(
            model, (splits.x_train[:1], encode_labels(model, splits.y_train[:1], classes))
        )
        monitor = _TrialMonitor(trial, self.listener, self.deadline)
        checkpoint = self._resume(trial, series, model, monitor)
        stopper = recipe.EarlyStopping(MONITOR, self.patience)
        callbacks = [monitor, stopper]
        first_epoch_rungs = self._first_epoch_rungs(trial, cost, checkpoint)
        if first_epoch_rungs is not None:
            callbacks.append(first_epoch_rungs)
        if self.tensorboard:
            run = f"trial-{trial.number:05d}"
            callbacks += recipe.tensorboard_callbacks(
                Path(self.tensorboard, trial.study.study_name, run), dict(hp.values), run
            )
        # Last, so every other callback sees the learning rate the epoch trained with.
        callbacks += recipe.plateau_callbacks(training)
        if checkpoint is not None:
            data_seed, first_epoch = checkpoint.data_seed, checkpoint.epoch
        else:  # an unseeded study's data order is drawn, and kept in the checkpoints
            data_seed = seed if seed is not None else int(np.random.default_rng().integers(2**31))
            first_epoch = 0
        if self.checkpoints is not None:  # after the plateau reducer: see Checkpointer
            callbacks.append(Checkpointer(self.checkpoints, series, self.checkpoint_every,
                                          data_seed, monitor.history, list(callbacks),
                                          checkpoint))
        # The seconds of the epochs it resumed count: the trial trained them.
        past_seconds = sum(record["seconds"] for record in monitor.history)
        start = time.perf_counter()
        try:
            if not monitor.pruned_at:
                self._fit(hp, model, training, callbacks, data_seed, first_epoch)
        finally:
            if overrides_fit(self.hypermodel):  # with what its fit declared
                trial.set_user_attr(TrialAttr.HYPERPARAMETERS, dict(hp.values))
            trial.set_user_attr(TrialAttr.HISTORY, monitor.history)
            trial.set_user_attr(TrialAttr.TRAIN_SECONDS,
                                round(past_seconds + time.perf_counter() - start, 3))
            trial.set_user_attr(TrialAttr.STOPPED_EPOCH, len(monitor.history))
        if monitor.failure:
            raise TrialFailed(monitor.failure, kind=FailKind.DIVERGED)
        if first_epoch_rungs is not None and first_epoch_rungs.stopped_at is not None:
            reason = (f"pruned at {first_epoch_rungs.stopped_at:.0%} of epoch 1, below a "
                      "rung of equal training cost")
            trial.set_user_attr(TrialAttr.PRUNED_BECAUSE, reason)
            raise optuna.TrialPruned(reason)
        if monitor.pruned_at:
            raise optuna.TrialPruned(f"pruned at epoch {monitor.pruned_at}")
        if not monitor.history:
            raise TrialFailed(
                "the hypermodel's fit trained no epoch that autodl saw: pass its callbacks "
                "on to model.fit", kind=FailKind.NO_EPOCHS,
            )
        if monitor.stopped_by_budget:
            trial.set_user_attr(TrialAttr.STOPPED_BY_BUDGET, True)
        value = max(record[MONITOR] for record in monitor.history)
        # The epoch whose weights the model holds: of tied epochs, the lowest loss.
        trial.set_user_attr(TrialAttr.BEST_EPOCH, stopper.best_epoch + 1)
        values = [value, *deployment]
        if is_new_best(trial.study, values):
            self.save_model(trial, model)
        return values if len(values) > 1 else value
