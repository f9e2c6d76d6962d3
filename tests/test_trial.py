"""The trial runner: recording, divergence, failures and the owns-compile path."""

from __future__ import annotations

import keras
import keras_tuner
import numpy as np
import optuna
import pytest
from conftest import make_images

from autodl.config import Fixed, Space
from autodl.datasets import Dataset, make_splits
from autodl.trial import TrialRunner, dry_build, make_optimizer, uses_one_hot_labels


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


def run(hypermodel, splits, enqueued, space=None):
    saved = []
    listener = Silent()
    runner = TrialRunner(hypermodel, splits, space or Space(), epochs=3, patience=3, seed=0,
                         listener=listener, save_model=lambda trial, model: saved.append(
                             trial.number))
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
    assert saved == [1]


def test_runner_records_history_and_saves_only_new_bests(splits):
    study, saved, listener = run(Explosive(), splits, [
        {"explode": False, "optimizer": "adam", "learning_rate": 0.01},
        {"explode": False, "optimizer": "sgd", "learning_rate": 1e-5},
    ])
    first, second = study.trials
    assert first.value > second.value
    assert saved == [0]
    assert listener.epochs[:3] == [(0, 1), (0, 2), (0, 3)]
    assert len(first.user_attrs["history"]) == first.user_attrs["stopped_epoch"] == 3
    assert first.user_attrs["hyperparameters"]["explode"] is False
    assert 1 <= first.user_attrs["best_epoch"] <= 3


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


def test_optimizers_and_label_encoding():
    for name in ("adam", "sgd", "rmsprop", "adagrad"):
        optimizer = make_optimizer(name, 0.01, 0.0)
        assert optimizer.weight_decay is None
    assert make_optimizer("sgd", 0.1, 1e-4).momentum == 0.9
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
