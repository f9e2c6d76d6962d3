"""The trial runner: recording, divergence, failures and the owns-compile path."""

from __future__ import annotations

import time

import keras
import keras_tuner
import numpy as np
import optuna
import pytest
from conftest import make_images

from autodl.config import LR_SCHEDULES, Choice, Fixed, Space
from autodl.datasets import Dataset, make_splits
from autodl.runtime import training_device
from autodl.trial import (
    TrialRunner,
    compile_model,
    dry_build,
    prebuild_training_state,
    uses_one_hot_labels,
)
from autodl.tuner import TrialResult


class Silent:
    def __init__(self):
        self.epochs = []

    def epoch_end(self, trial_number, epoch, record):
        self.epochs.append((trial_number, epoch))


class Explosive(keras_tuner.HyperModel):
    """Diverges when asked to: a NaN kernel makes the loss NaN from the first batch."""

    def build(self, hp):
        explode = hp.Boolean("explode")
        inputs = keras.Input((8, 8, 1))
        x = keras.layers.Flatten()(inputs)
        init = keras.initializers.Constant(float("nan")) if explode else "glorot_uniform"
        outputs = keras.layers.Dense(3, activation="softmax", kernel_initializer=init)(x)
        return keras.Model(inputs, outputs)


class SelfCompiling(Explosive):
    """Compiles itself with a one-hot loss, like KerasTuner's ready hypermodels."""

    owns_compile = True

    def build(self, hp):
        model = super().build(hp)
        model.compile(keras.optimizers.Adam(0.01), loss="categorical_crossentropy",
                      metrics=["accuracy"])
        return model


@pytest.fixture(scope="module")
def splits():
    x, y = make_images(90)
    return make_splits(Dataset("tiny", x, y, ["0", "1", "2"]), seed=0)


def run(hypermodel, splits, enqueued, space=None, **options):
    """Run the enqueued trials; returns the study, the saved models by trial, the listener."""
    saved = {}
    listener = Silent()
    runner = TrialRunner(hypermodel, splits, space or Space(), epochs=3, patience=3, seed=0,
                         listener=listener,
                         save_model=lambda trial, model: saved.update({trial.number: model}),
                         **options)
    study = optuna.create_study(direction="maximize")
    for params in enqueued:
        study.enqueue_trial(params)
    study.optimize(runner, n_trials=len(enqueued), catch=(Exception,))
    return study, saved, listener


def test_diverging_trial_fails_with_reason_and_the_next_one_runs(splits):
    study, saved, _ = run(Explosive(), splits, [{"explode": True, "optimizer": "adam"},
                                                {"explode": False, "optimizer": "adam",
                                                 "learning_rate": 0.01}])
    failed, completed = study.trials
    assert failed.state.name == "FAIL"
    assert failed.user_attrs["fail_kind"] == "diverged"
    assert "loss became" in failed.user_attrs["fail_reason"]
    assert completed.state.name == "COMPLETE"
    assert list(saved) == [1]


def test_runner_records_history_and_saves_only_new_bests(splits):
    study, saved, listener = run(Explosive(), splits, [
        {"explode": False, "optimizer": "adam", "learning_rate": 0.01},
        {"explode": False, "optimizer": "sgd", "learning_rate": 1e-5},
    ])
    first, second = study.trials
    assert first.value > second.value
    assert list(saved) == [0]
    assert listener.epochs[:3] == [(0, 1), (0, 2), (0, 3)]
    assert len(first.user_attrs["history"]) == first.user_attrs["stopped_epoch"] == 3
    assert first.user_attrs["hyperparameters"]["explode"] is False
    assert 1 <= first.user_attrs["best_epoch"] <= 3


class ScriptedEpochs(Explosive):
    """Its fit reports scripted validation results instead of training.

    Each epoch sets every weight to its epoch number, so the model shows which epoch's
    weights it holds.
    """

    #: (val_accuracy, val_loss) of epochs 1-3: epochs 1 and 3 tie, epoch 3 of lower loss.
    EPOCHS = [(0.75, 0.8), (0.5, 0.9), (0.75, 0.6)]

    def fit(self, hp, model, *args, callbacks=None, **kwargs):
        callbacks = keras.callbacks.CallbackList(callbacks, model=model)
        callbacks.on_train_begin()
        for epoch, (accuracy, loss) in enumerate(self.EPOCHS):
            callbacks.on_epoch_begin(epoch)
            model.set_weights([np.full_like(w, epoch + 1) for w in model.get_weights()])
            callbacks.on_epoch_end(epoch, {"loss": loss, "accuracy": accuracy,
                                           "val_loss": loss, "val_accuracy": accuracy})
        callbacks.on_train_end()


def test_of_tied_epochs_the_trial_keeps_and_records_the_one_of_lowest_loss(splits):
    study, saved, _ = run(ScriptedEpochs(), splits, [{"explode": False}])
    (trial,) = study.trials
    assert trial.value == 0.75 and trial.user_attrs["best_epoch"] == 3
    assert all((w == 3).all() for w in saved[0].get_weights())


def test_a_trial_the_budget_stops_completes_with_its_epochs_and_says_so(splits):
    adam = {"explode": False, "optimizer": "adam", "learning_rate": 0.01}
    # The budget's end has passed: the trial keeps its first epoch, not the other two.
    study, saved, _ = run(Explosive(), splits, [adam], deadline=time.monotonic())
    (trial,) = study.trials
    assert trial.state.name == "COMPLETE" and trial.user_attrs["stopped_epoch"] == 1
    assert trial.user_attrs["stopped_by_budget"] is True
    assert TrialResult.from_frozen(trial).reason == "stopped by the time budget"
    assert list(saved) == [0]
    # With time enough for every epoch, no mark.
    study, _, _ = run(Explosive(), splits, [adam], deadline=time.monotonic() + 3600)
    assert "stopped_by_budget" not in study.trials[0].user_attrs


def test_self_compiling_plugin_keeps_its_loss_and_gets_one_hot_labels(splits):
    study, _, _ = run(SelfCompiling(), splits, [{"explode": False}])
    trial = study.trials[0]
    assert trial.state.name == "COMPLETE"
    # Only the batch size is the core's: the plugin's optimizer is kept.
    assert "learning_rate" not in trial.params and "batch_size" in trial.params


def test_dry_build_reports_declared_specs_without_training():
    hp = dry_build(Explosive(), Space({"optimizer": Fixed("sgd")}))
    assert hp.values["explode"] is False
    assert hp.values["optimizer"] == "sgd"
    assert set(hp.specs) >= {"explode", "learning_rate", "batch_size", "weight_decay"}


def test_build_returning_something_else_fails_the_trial(splits):
    class NotAModel(keras_tuner.HyperModel):
        def build(self, hp):
            return "a string"

    study, _, _ = run(NotAModel(), splits, [{}])
    assert "not a keras.Model" in study.trials[0].user_attrs["fail_reason"]


def test_label_encoding():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "categorical_crossentropy")
    assert uses_one_hot_labels(model)
    model.compile("adam", "sparse_categorical_crossentropy")
    assert not uses_one_hot_labels(model)
    assert np.all(np.isfinite(model.predict(np.zeros((1, 2)), verbose=0)))


def test_out_of_memory_fails_one_trial_and_the_next_one_trains(splits):
    import tensorflow as tf

    class Greedy(Explosive):
        """Runs out of memory when it is asked to be huge."""

        def build(self, hp):
            if hp.Boolean("huge"):
                raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")
            return super().build(hp)

    study, _, _ = run(Greedy(), splits, [{"huge": True, "explode": False},
                                         {"huge": False, "explode": False}])
    failed, completed = study.trials
    assert failed.state.name == "FAIL"
    assert failed.user_attrs["fail_kind"] == "ResourceExhaustedError"
    assert "OOM when allocating tensor" in failed.user_attrs["fail_reason"]
    assert completed.state.name == "COMPLETE"


def test_schedules_drive_the_optimizer_and_only_the_chosen_ones_parameters_exist(splits):
    space = Space({"lr_schedule": Choice(LR_SCHEDULES), "lr_plateau": Choice((False, True))})
    base = {"explode": False, "optimizer": "sgd", "batch_size": 16, "weight_decay_enabled": False}
    study, _, _ = run(Explosive(), splits, [
        {**base, "learning_rate": 0.01, "lr_schedule": "exponential", "lr_decay_rate": 0.5},
        {**base, "learning_rate": 0.01, "lr_schedule": "cyclic", "lr_cycles": 3},
        # one tiny step per epoch cannot improve val_loss: the plateau halves the rate
        {**base, "batch_size": 256, "learning_rate": 1e-5, "lr_schedule": "constant",
         "lr_plateau": True,
         "lr_plateau_factor": 0.5, "lr_plateau_patience": 1},
        {**base, "learning_rate": 0.01, "lr_schedule": "constant", "lr_plateau": False},
    ], space)
    exponential, cyclic, plateau, constant = study.trials
    schedule_only = {"lr_decay_rate", "lr_warmup_fraction", "lr_cycles", "lr_plateau",
                     "lr_plateau_factor", "lr_plateau_patience"}

    def chosen(trial):
        assert trial.state.name == "COMPLETE", trial.user_attrs.get("fail_reason")
        assert set(trial.params) & schedule_only == set(trial.user_attrs[
            "hyperparameters"]) & schedule_only
        return set(trial.params) & schedule_only

    def rates(trial):
        return [record["learning_rate"] for record in trial.user_attrs["history"]]

    assert chosen(exponential) == {"lr_decay_rate"}
    assert rates(exponential) == pytest.approx([0.005, 0.0025, 0.00125])  # at each epoch's end
    assert chosen(cyclic) == {"lr_cycles"}
    assert rates(cyclic) == pytest.approx([0.01] * 3)  # each epoch is a cycle: restarted
    assert chosen(plateau) == {"lr_plateau", "lr_plateau_factor", "lr_plateau_patience"}
    assert rates(plateau) == pytest.approx([1e-5, 1e-5, 5e-6])
    assert chosen(constant) == {"lr_plateau"}
    assert rates(constant) == pytest.approx([0.01] * 3)
    assert constant.user_attrs["device"] == training_device()


def test_tensorboard_writes_one_run_per_trial_with_its_hyperparameters(splits, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    study, _, _ = run(Explosive(), splits, [{"explode": False, "optimizer": "adam"}] * 2,
                      tensorboard=str(tmp_path / "logs"))
    runs = tmp_path / "logs" / study.study_name
    assert sorted(path.name for path in runs.iterdir()) == ["trial-00000", "trial-00001"]
    trial = study.trials[1]
    events = EventAccumulator(str(runs / "trial-00001"))
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    logged = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    assert logged.group_name == "trial-00001"
    assert {name: getattr(value, value.WhichOneof("kind"))
            for name, value in logged.hparams.items()} == pytest.approx(
        trial.user_attrs["hyperparameters"])
    for part, tags in (("train", {"epoch_accuracy", "epoch_loss", "epoch_learning_rate"}),
                       ("validation", {"epoch_accuracy", "epoch_loss"})):
        scalars = EventAccumulator(str(runs / "trial-00001" / part))
        scalars.Reload()
        assert tags <= set(scalars.Tags()["tensors"])
        assert [event.step for event in scalars.Tensors("epoch_accuracy")] == [0, 1, 2]


@pytest.fixture
def float32_after():
    """The float32 policy again after a test that trained with mixed precision."""
    yield
    keras.config.set_dtype_policy("float32")


@pytest.mark.parametrize("hypermodel", [Explosive(), SelfCompiling()],
                         ids=["compiled-by-autodl", "compiled-by-plugin"])
def test_mixed_precision_models_compute_in_float16_and_output_float32(
    splits, float32_after, hypermodel
):
    study, saved, _ = run(hypermodel, splits, [{"explode": False, "optimizer": "adam"}],
                          mixed_precision=True)
    assert study.trials[0].state.name == "COMPLETE", study.trials[0].user_attrs
    model = saved[0]
    assert model.layers[-2].compute_dtype == "float16"
    assert keras.backend.standardize_dtype(model.output.dtype) == "float32"
    assert model.predict(splits.x_val, verbose=0).dtype == np.float32
    # the plugin's own compile survives the float32 cast
    assert uses_one_hot_labels(model) == getattr(hypermodel, "owns_compile", False)



def test_compile_model_spans_the_schedule_over_every_step():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    training = {"optimizer": "adam", "learning_rate": 0.1, "weight_decay": 0.0,
                "batch_size": 10, "lr_schedule": "step"}
    compile_model(model, training, examples=95, epochs=10)  # 10 steps an epoch, 100 in all
    model.optimizer.build(model.trainable_variables)
    rates = {}
    for step in (0, 50, 51, 75, 76):
        model.optimizer.iterations.assign(step)
        rates[step] = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    assert rates == pytest.approx({0: 0.1, 50: 0.1, 51: 0.01, 75: 0.01, 76: 0.001})
    assert model.loss == "sparse_categorical_crossentropy"


# --- Keras's private API, fenced -------------------------------------------------------------


def test_the_installed_keras_has_the_private_symbolic_build():
    """``Trainer._symbolic_build`` saves memory per trial; a Keras without it loses that only.

    If this fails after a Keras upgrade, training still works (see the next test): find
    what Keras calls it now, then move the upper bound on keras in pyproject.toml.
    """
    assert callable(getattr(keras.Model, "_symbolic_build", None))
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    assert prebuild_training_state(model, (np.zeros((1, 2), "float32"), np.zeros(1)))
    assert model.optimizer.built


def test_trials_train_without_the_private_symbolic_build(splits, monkeypatch):
    owner = next(c for c in type(keras.Sequential()).__mro__ if "_symbolic_build" in vars(c))
    monkeypatch.delattr(owner, "_symbolic_build")
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    model.compile("adam", "sparse_categorical_crossentropy")
    assert not prebuild_training_state(model, (np.zeros((1, 2), "float32"), np.zeros(1)))
    assert not model.optimizer.built
    study, saved, _ = run(Explosive(), splits, [{"explode": False, "optimizer": "adam"}])
    assert study.trials[0].state.name == "COMPLETE", study.trials[0].user_attrs
    assert len(study.trials[0].user_attrs["history"]) == 3 and list(saved) == [0]


def test_dependency_bounds_hold_the_installed_versions_of_the_fenced_libraries():
    """pyproject.toml bounds keras (``Trainer._symbolic_build``) and keras-tuner to the
    versions known to work; the versions the tests run on must be among them."""
    import importlib.metadata
    import tomllib

    from conftest import REPO
    from packaging.requirements import Requirement

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    bounds = {req.name: req.specifier for req in map(Requirement, project["dependencies"])}
    for name in ("keras", "keras-tuner"):
        assert any(spec.operator == "<" for spec in bounds[name]), f"{name} has no upper bound"
        assert bounds[name].contains(importlib.metadata.version(name)), (name, bounds[name])
