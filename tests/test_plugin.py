"""The plugin contract (autodl.plugin): what a plugin receives, and KerasTuner's whole
HyperModel, ``fit`` included, run as KerasTuner runs it."""

from __future__ import annotations

import json
import sys
import textwrap

import keras
import keras_tuner
import numpy as np
import optuna
import pytest
from conftest import make_images, tune_args
from optuna.distributions import CategoricalDistribution

from autodl import plugin, registry, storage
from autodl.cli import main
from autodl.config import Space
from autodl.datasets import Dataset, make_splits
from autodl.hyperparameters import OptunaHyperParameters
from autodl.trial import TrialRunner, dry_build

optuna.logging.set_verbosity(optuna.logging.ERROR)
EPOCHS = 2


class Silent:
    def epoch_end(self, trial_number, epoch, record):
        pass


def dense(hp, input_shape=(8, 8, 1), num_classes=3) -> keras.Model:
    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(hp.Int("units", 4, 16), activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))


class BatchSizeFit(keras_tuner.HyperModel):
    """The anchor case of KerasTuner's docs: ``fit`` tunes the batch size.

    Records the form of every ``fit`` call it gets.
    """

    def __init__(self):
        super().__init__()
        self.calls = []

    def build(self, hp):
        return dense(hp)

    def fit(self, hp, model, *args, **kwargs):
        self.calls.append({
            "hp": hp, "model": model, "args": [type(arg) for arg in args],
            "kwargs": sorted(kwargs),
            "validation_data": [type(part) for part in kwargs.get("validation_data", ())],
            "callbacks": [type(callback).__name__ for callback in kwargs["callbacks"]],
        })
        return model.fit(*args, batch_size=hp.Choice("batch_size", [16, 64]), **kwargs)


class CompilingBatchSizeFit(BatchSizeFit):
    """Compiles its own model too, as KerasTuner's docs teach."""

    owns_compile = True
    loss = "sparse_categorical_crossentropy"

    def build(self, hp):
        model = dense(hp)
        model.compile("adam", self.loss, metrics=["accuracy"])
        return model


class OneHotBatchSizeFit(CompilingBatchSizeFit):
    loss = "categorical_crossentropy"


class FitWithoutCallbacks(BatchSizeFit):
    """Trains without passing the callbacks on: autodl sees no epoch."""

    def fit(self, hp, model, *args, callbacks=None, **kwargs):
        return model.fit(*args, **kwargs)


@pytest.fixture(scope="module")
def splits():
    x, y = make_images(90)
    return make_splits(Dataset("tiny", x, y, ["0", "1", "2"]), seed=0)


def tune(hypermodel, splits, trials, seed=0):
    runner = TrialRunner(hypermodel, splits, Space(), epochs=EPOCHS, patience=EPOCHS, seed=seed,
                         listener=Silent(), save_model=lambda trial, model: None)
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=seed))
    study.optimize(runner, n_trials=trials, catch=(Exception,))
    return study


# --- what a plugin receives ---------------------------------------------------------------------


def test_a_build_function_is_wrapped_by_a_class_not_patched():
    hypermodel = plugin.make_hypermodel(dense, (6, 6, 2), 4)
    assert type(hypermodel) is plugin.BuildFunction
    assert isinstance(hypermodel, plugin.HyperModel)
    assert hypermodel.function is dense and hypermodel.name == "dense"
    assert hypermodel.facts == {"input_shape": (6, 6, 2), "num_classes": 4}
    model = hypermodel.build(OptunaHyperParameters(Space()))
    assert model.input_shape == (None, 6, 6, 2) and model.output_shape == (None, 4)
    # a function asking for nothing gets nothing, and never options
    assert plugin.plugin_arguments(lambda hp: None) == set()
    assert plugin.plugin_arguments(dense) == {"input_shape", "num_classes"}
    assert plugin.make_hypermodel(lambda hp: hp, (2,), 2).facts == {}


def test_a_class_receives_the_facts_and_options_its_init_names():
    class Wants(plugin.HyperModel):
        def __init__(self, input_shape, classes, weights="imagenet"):
            super().__init__()
            self.given = (input_shape, classes, weights)

    assert plugin.plugin_arguments(Wants) == {"self", "input_shape", "classes", "weights"}
    assert plugin.make_hypermodel(Wants, (3, 3, 1), 5).given == ((3, 3, 1), 5, "imagenet")
    assert plugin.make_hypermodel(Wants, (3,), 2, weights="none").given == ((3,), 2, "none")
    with pytest.raises(TypeError, match="neither a build function nor a HyperModel"):
        plugin.plugin_arguments(3)


def test_owns_compile_and_overrides_fit():
    assert not plugin.owns_compile(BatchSizeFit()) and plugin.owns_compile(CompilingBatchSizeFit())
    assert plugin.overrides_fit(BatchSizeFit()) and plugin.overrides_fit(CompilingBatchSizeFit())
    assert not plugin.overrides_fit(plugin.BuildFunction(dense))
    assert not plugin.overrides_fit(registry.instantiate(registry.find("mlp"), (8, 8, 1), 3))
    assert not plugin.overrides_fit(registry.instantiate(registry.find("kt:HyperResNet"),
                                                         (32, 32, 3), 10))


@pytest.mark.parametrize("name", ["mlp", "cnn", "mobilenetv2"])
def test_built_ins_state_the_contract(name):
    target = registry.find(name).load()
    assert issubclass(target, plugin.HyperModel) and not target.owns_compile


# --- KerasTuner's HyperModel.fit -----------------------------------------------------------------


def test_a_fit_that_chooses_the_batch_size_is_tuned_by_autodl(splits):
    hypermodel = BatchSizeFit()
    study = tune(hypermodel, splits, trials=4)
    trials = study.trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4, trials[0].user_attrs
    # fit's choice is an Optuna parameter with fit's own values; the core declares none
    assert {t.params["batch_size"] for t in trials} == {16, 64}
    assert trials[0].distributions["batch_size"] == CategoricalDistribution((16, 64))
    for trial in trials:
        assert trial.user_attrs["hyperparameters"]["batch_size"] == trial.params["batch_size"]
        assert {"learning_rate", "optimizer", "units"} <= set(trial.params)  # still tuned
        history = trial.user_attrs["history"]
        assert [record["epoch"] for record in history] == list(range(1, EPOCHS + 1))
        assert trial.user_attrs["stopped_epoch"] == EPOCHS
        assert trial.value == max(record["val_accuracy"] for record in history)
    call = hypermodel.calls[0]
    assert call["args"] == [np.ndarray, np.ndarray]
    assert call["validation_data"] == [np.ndarray, np.ndarray]
    assert call["callbacks"][:2] == ["_TrialMonitor", "EarlyStopping"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning:keras_tuner")  # its threading calls
def test_autodl_calls_fit_as_keras_tuner_does(splits, tmp_path):
    autodl_run = CompilingBatchSizeFit()
    tune(autodl_run, splits, trials=1)
    keras_tuner_run = CompilingBatchSizeFit()
    tuner = keras_tuner.RandomSearch(keras_tuner_run, objective="val_accuracy", max_trials=2,
                                     seed=0, directory=str(tmp_path), project_name="anchor")
    tuner.search(splits.x_train, splits.y_train, validation_data=(splits.x_val, splits.y_val),
                 epochs=EPOCHS, verbose=0)
    assert len(keras_tuner_run.calls) == 2
    assert len(tuner.oracle.trials) == 2
    ours, theirs = autodl_run.calls[0], keras_tuner_run.calls[0]
    assert isinstance(ours["hp"], OptunaHyperParameters)
    assert isinstance(theirs["hp"], keras_tuner.HyperParameters)
    assert isinstance(ours["model"], keras.Model) and isinstance(theirs["model"], keras.Model)
    for key in ("args", "kwargs", "validation_data"):
        assert ours[key] == theirs[key], key
    assert ours["kwargs"] == ["callbacks", "epochs", "validation_data", "verbose"]
    # each passes its own callbacks: KerasTuner's tuner callback and checkpoint, autodl's
    # trial monitor and early stopping
    assert "SaveBestEpoch" in theirs["callbacks"] and "_TrialMonitor" in ours["callbacks"]


@pytest.mark.parametrize("hypermodel", [CompilingBatchSizeFit(), OneHotBatchSizeFit()],
                         ids=["sparse", "one-hot"])
def test_a_self_compiling_fit_keeps_its_compile_and_the_core_declares_nothing(
    splits, hypermodel
):
    study = tune(hypermodel, splits, trials=2)
    for trial in study.trials:
        assert trial.state.name == "COMPLETE", trial.user_attrs.get("fail_reason")
        assert set(trial.params) == {"units", "batch_size"}
    assert hypermodel.calls[-1]["model"].loss == hypermodel.loss
    assert set(dry_build(hypermodel, Space()).specs) == {"units"}


def test_a_fit_that_drops_the_callbacks_fails_its_trial_with_the_reason(splits):
    trial = tune(FitWithoutCallbacks(), splits, trials=1).trials[0]
    assert trial.state.name == "FAIL"
    assert trial.user_attrs["fail_kind"] == "no_epochs"
    assert "pass its callbacks on to model.fit" in trial.user_attrs["fail_reason"]


FIT_PLUGIN = '''
"""A dense net whose fit tunes the batch size."""
import keras
import keras_tuner

calls = []


class Net(keras_tuner.HyperModel):
    def __init__(self, input_shape, classes):
        super().__init__()
        self.shape, self.classes = input_shape, classes

    def build(self, hp):
        return keras.Sequential([keras.Input(self.shape), keras.layers.Flatten(),
                                 keras.layers.Dense(self.classes, activation="softmax")])

    def fit(self, hp, model, *args, **kwargs):
        batch_size = hp.Choice("batch_size", [16, 64])
        calls.append((batch_size, kwargs.get("epochs"), "validation_data" in kwargs))
        return model.fit(*args, batch_size=batch_size, **kwargs)
'''


def test_tune_and_retrain_a_plugin_file_whose_fit_tunes_the_batch_size(in_tmp, tiny_npz):
    (in_tmp / "fitnet.py").write_text(textwrap.dedent(FIT_PLUGIN))
    # In this process (--workers 0), where the plugin's calls can be counted.
    assert main(tune_args(f"npz:{tiny_npz}", "--study", "fit", "--pruner", "none",
                          "--workers", "0", arch="fitnet.py", trials=2)) == 0
    study = optuna.load_study(study_name="fit", storage="sqlite:///studies/autodl.db")
    assert all("batch_size" in trial.params for trial in study.trials)
    module = sys.modules[registry.find("fitnet.py").load().__module__]
    assert len(module.calls) == 2 and all(call[1:] == (2, True) for call in module.calls)

    assert main(["export", "fit", "--out", "model", "--retrain"]) == 0
    retrained = json.loads((in_tmp / "model" / "manifest.json").read_text())["retrained"]
    best = storage.most_accurate_trial(study)
    # retrained by the plugin's own fit, with the best trial's batch size, without validation
    assert module.calls[-1] == (best.params["batch_size"], best.user_attrs["best_epoch"], False)
    assert len(retrained["history"]) == retrained["epochs"] == best.user_attrs["best_epoch"]
