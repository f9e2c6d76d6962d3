"""The bridge: KerasTuner's ``hp`` API answered by a real Optuna trial."""

from __future__ import annotations

import keras
import keras_tuner
import numpy as np
import optuna
import pytest
from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from autodl import registry
from autodl.config import TRAINING_SPACE, Choice, Fixed, FloatRange, IntRange, Space
from autodl.errors import AutodlError
from autodl.hyperparameters import OptunaHyperParameters, spec_from_keras_tuner

optuna.logging.set_verbosity(optuna.logging.ERROR)


def ask(params: dict | None = None, seed: int = 0) -> optuna.Trial:
    """A fresh in-memory trial; ``params`` are enqueued so the trial takes them."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    if params:
        study.enqueue_trial(params)
    return study.ask()


def bridge(trial: optuna.Trial | None = None, **overrides) -> OptunaHyperParameters:
    return OptunaHyperParameters(Space(overrides), trial)


# --- one hyperparameter at a time ---------------------------------------------------------


@pytest.mark.parametrize(
    ("declare", "distribution"),
    [
        (lambda hp: hp.Int("h", 1, 10), IntDistribution(1, 10)),
        (lambda hp: hp.Int("h", 16, 256, step=16), IntDistribution(16, 256, step=16)),
        (lambda hp: hp.Int("h", 32, 1024, sampling="log"), IntDistribution(32, 1024, log=True)),
        (lambda hp: hp.Float("h", 0.0, 1.0), FloatDistribution(0.0, 1.0)),
        (lambda hp: hp.Float("h", 0.0, 1.0, step=0.25), FloatDistribution(0.0, 1.0, step=0.25)),
        (lambda hp: hp.Float("h", 1e-4, 1e-1, sampling="log"),
         FloatDistribution(1e-4, 1e-1, log=True)),
        (lambda hp: hp.Choice("h", [16, 32, 64]), CategoricalDistribution((16, 32, 64))),
        (lambda hp: hp.Choice("h", [0.1, 0.5]), CategoricalDistribution((0.1, 0.5))),
        (lambda hp: hp.Choice("h", ["relu", "gelu"]), CategoricalDistribution(("relu", "gelu"))),
        (lambda hp: hp.Boolean("h"), CategoricalDistribution((False, True))),
    ],
)
def test_each_kind_is_suggested_with_its_optuna_distribution(declare, distribution):
    for seed in range(3):
        trial = ask(seed=seed)
        hp = bridge(trial)
        value = declare(hp)
        assert trial.distributions == {"h": distribution}
        assert trial.params == {"h": value}
        assert hp.values == {"h": value}
        assert hp["h"] == value
        if isinstance(distribution, IntDistribution):
            assert type(value) is int and (value - distribution.low) % distribution.step == 0
        elif isinstance(distribution, FloatDistribution):
            assert type(value) is float
        else:
            assert type(value) is type(distribution.choices[0])


def test_log_int_with_a_multiplicative_step_becomes_keras_tuners_choices():
    trial = ask()
    value = bridge(trial).Int("units", 32, 1024, step=2, sampling="log")
    expected = (32, 64, 128, 256, 512, 1024)
    assert trial.distributions == {"units": CategoricalDistribution(expected)}
    assert value in expected


def test_reverse_log_float_becomes_a_choice_of_keras_tuners_values():
    trial = ask()
    hp = bridge(trial)
    value = hp.Float("momentum", 1e-3, 1.0, sampling="reverse_log")
    distribution = trial.distributions["momentum"]
    assert isinstance(distribution, CategoricalDistribution)
    kt_values = keras_tuner.engine.hyperparameters.Float(
        "momentum", 1e-3, 1.0, sampling="reverse_log").values
    assert distribution.choices == tuple(sorted(set(kt_values)))
    assert len(distribution.choices) > 1
    assert all(1e-3 <= c <= 1.0 for c in distribution.choices)
    assert value in distribution.choices
    assert hp.specs["momentum"] == Choice(distribution.choices)


def test_bool_choices_come_back_as_keras_tuner_gives_them():
    # KerasTuner standardises a Choice of bools to ints; the bridge must answer the same type.
    trial = ask()
    value = bridge(trial).Choice("flag", [True, False])
    kt_value = keras_tuner.HyperParameters().Choice("flag", [True, False])
    assert type(value) is type(kt_value)
    assert value in (True, False)
    assert isinstance(trial.distributions["flag"], CategoricalDistribution)
    assert len(trial.distributions["flag"].choices) == 2


def test_boolean_is_a_real_bool():
    trial = ask({"shortcut": True})
    hp = bridge(trial)
    assert hp.Boolean("shortcut") is True
    assert trial.params == {"shortcut": True}


def test_fixed_is_not_suggested():
    trial = ask()
    hp = bridge(trial)
    assert hp.Fixed("stride", 2) == 2
    assert hp.Fixed("padding", "same") == "same"
    assert trial.params == {} and trial.distributions == {}
    assert hp.values == {"stride": 2, "padding": "same"}
    assert hp.specs == {"stride": Fixed(2), "padding": Fixed("same")}


def test_same_name_twice_is_suggested_once():
    trial = ask()
    hp = bridge(trial)
    first = hp.Int("units", 1, 100)
    assert hp.Int("units", 1, 100) == first
    assert list(trial.params) == ["units"]


def test_name_scopes_prefix_the_optuna_name():
    trial = ask()
    hp = bridge(trial)
    with hp.name_scope("block1"):
        value = hp.Int("units", 8, 16)
    assert trial.params == {"block1/units": value}
    assert hp.values == {"block1/units": value}


def test_enqueued_values_reach_the_model():
    trial = ask({"units": 48, "rate": 0.25, "act": "tanh"})
    hp = bridge(trial)
    assert hp.Int("units", 16, 64, step=16) == 48
    assert hp.Float("rate", 0.0, 0.5) == 0.25
    assert hp.Choice("act", ["relu", "tanh"]) == "tanh"


# --- conditional hyperparameters -----------------------------------------------------------


def conditional_build(hp: keras_tuner.HyperParameters) -> dict:
    kind = hp.Choice("kind", ["dense", "conv"])
    with hp.conditional_scope("kind", "dense"):
        units = hp.Int("units", 8, 32)
    with hp.conditional_scope("kind", ["conv"]):
        filters = hp.Int("filters", 4, 16, step=4)
        pool = hp.Choice("pool", ["max", "avg"])
        with hp.conditional_scope("pool", "max"):
            pool_size = hp.Int("pool_size", 2, 3)
    rate = hp.Float("conv_dropout", 0.0, 0.5, parent_name="kind", parent_values=["conv"])
    return {"kind": kind, "units": units, "filters": filters, "pool": pool,
            "pool_size": pool_size, "conv_dropout": rate}


@pytest.mark.parametrize(
    ("enqueued", "active"),
    [
        ({"kind": "dense"}, {"kind", "units"}),
        ({"kind": "conv", "pool": "avg"}, {"kind", "filters", "pool", "conv_dropout"}),
        ({"kind": "conv", "pool": "max"},
         {"kind", "filters", "pool", "pool_size", "conv_dropout"}),
    ],
)
def test_inactive_conditional_hyperparameters_are_not_suggested(enqueued, active):
    trial = ask(enqueued)
    hp = bridge(trial)
    seen = conditional_build(hp)
    assert set(trial.params) == active
    assert set(trial.distributions) == active
    assert set(hp.values) == active
    assert set(hp.specs) == active
    for name, value in seen.items():
        if name in active:
            assert value == trial.params[name]
        else:
            assert value is None  # KerasTuner answers None for an inactive one
    assert isinstance(trial.distributions["kind"], CategoricalDistribution)
    if "filters" in active:
        assert trial.distributions["filters"] == IntDistribution(4, 16, step=4)
        assert trial.distributions["conv_dropout"] == FloatDistribution(0.0, 0.5)
    if "units" in active:
        assert trial.distributions["units"] == IntDistribution(8, 32)


def test_conditional_defaults_in_a_dry_build():
    hp = bridge()  # no trial: the first choice "dense" is the default
    seen = conditional_build(hp)
    assert hp.values == {"kind": "dense", "units": 8}
    assert seen["filters"] is None and seen["pool_size"] is None
    hp = bridge(kind=Fixed("conv"))
    conditional_build(hp)
    assert hp.values == {"kind": "conv", "filters": 4, "pool": "max", "pool_size": 2,
                         "conv_dropout": 0.0}


# --- dry builds (no trial): defaults -------------------------------------------------------


def test_dry_build_uses_keras_tuner_defaults():
    hp = bridge()
    assert hp.trial is None
    assert hp.Int("units", 32, 1024, sampling="log") == 32
    assert hp.Int("blocks", 1, 9, default=4) == 4
    assert hp.Float("rate", 1e-4, 1e-1, sampling="log") == 1e-4
    assert hp.Float("momentum", 0.5, 0.99, default=0.9) == 0.9
    assert hp.Choice("act", ["relu", "gelu"]) == "relu"
    assert hp.Choice("head", ["flatten", "avg"], default="avg") == "avg"
    assert hp.Boolean("bn") is False
    assert hp.Boolean("shortcut", default=True) is True
    assert hp.Fixed("stride", 2) == 2
    assert hp.values == {"units": 32, "blocks": 4, "rate": 1e-4, "momentum": 0.9, "act": "relu",
                         "head": "avg", "bn": False, "shortcut": True, "stride": 2}
    assert hp.specs["units"] == IntRange(32, 1024, 1, True)
    assert hp.specs["rate"] == FloatRange(1e-4, 1e-1, log=True)
    assert hp.specs["bn"] == Choice((False, True))


def test_dry_build_default_outside_the_resolved_range_takes_its_first_value():
    # depth 1..6 meets the shared default 2..20: KerasTuner's default 1 is out, 2 is used.
    hp = bridge()
    assert hp.Int("depth", 1, 6) == 2
    assert hp.Float("dropout", 0.0, 0.9, default=0.7) == 0.0
    assert hp.specs == {"depth": IntRange(2, 6), "dropout": FloatRange(0.0, 0.5)}
    hp = bridge(units=Choice((128, 256)), act=Fixed("gelu"))
    assert hp.Int("units", 32, 1024) == 128
    assert hp.Choice("act", ["relu", "gelu"]) == "gelu"


def test_a_low_end_dry_build_takes_the_lowest_numbers_and_keeps_other_defaults():
    hp = OptunaHyperParameters(Space({"filters": Choice((64, 16, 32))}), low_end=True)
    assert hp.Int("blocks", 1, 9, default=4) == 1
    assert hp.Float("dropout", 0.0, 0.5, default=0.25) == 0.0
    assert hp.Choice("units", [256, 64, 128], default=128) == 64
    assert hp.Choice("filters", [16, 32, 64], default=32) == 16  # the user's order aside
    assert hp.Choice("head", ["flatten", "avg"], default="avg") == "avg"  # no size: default
    assert hp.Boolean("shortcut", default=True) is True
    assert hp.declare("learning_rate", TRAINING_SPACE["learning_rate"]) == 1e-3  # training


def test_declare_training_hyperparameters():
    hp = bridge()
    basics = {name: TRAINING_SPACE[name]
              for name in ("learning_rate", "batch_size", "optimizer", "weight_decay")}
    assert {name: hp.declare(name, spec) for name, spec in basics.items()} == {
        "learning_rate": 1e-3, "batch_size": 64, "optimizer": "adam", "weight_decay": 0.0,
    }
    # the space searched: the declarations cut to the shared defaults (Space.resolve)
    assert hp.specs == {name: Space().resolve(name, spec) for name, spec in basics.items()}

    trial = ask({"weight_decay_enabled": False})
    hp = bridge(trial)
    assert hp.declare("weight_decay", TRAINING_SPACE["weight_decay"]) == 0.0
    assert trial.params == {"weight_decay_enabled": False}

    trial = ask({"weight_decay_enabled": True})
    hp = bridge(trial)
    value = hp.declare("weight_decay", TRAINING_SPACE["weight_decay"])
    assert 1e-6 <= value <= 1e-1 and trial.params["weight_decay"] == value
    assert trial.distributions["weight_decay"] == FloatDistribution(1e-6, 1e-1, log=True)
    assert hp.values["weight_decay"] == value


# --- the user's overrides ---------------------------------------------------------------------


def test_overrides_narrow_what_optuna_suggests():
    trial = ask()
    hp = bridge(trial, units=Fixed(64), depth=IntRange(2, 3), act=Choice(("tanh",)),
                dropout=FloatRange(0.1, 0.2), filters=Choice((16, 64)))
    assert hp.Int("units", 32, 1024, sampling="log") == 64
    depth = hp.Int("depth", 1, 6)
    act = hp.Choice("act", ["relu", "gelu", "tanh"])
    dropout = hp.Float("dropout", 0.0, 0.9)
    filters = hp.Int("filters", 8, 128)
    # a fixed value is not a suggestion: it is only in hp.values
    assert "units" not in trial.params and "units" not in trial.distributions
    assert hp.values["units"] == 64 and hp.specs["units"] == Fixed(64)
    assert trial.distributions == {
        "depth": IntDistribution(2, 3),
        "act": CategoricalDistribution(("tanh",)),
        "dropout": FloatDistribution(0.1, 0.2),
        "filters": CategoricalDistribution((16, 64)),
    }
    assert trial.params == {"depth": depth, "act": act, "dropout": dropout, "filters": filters}
    assert hp.values == {"units": 64, **trial.params}


def test_an_override_that_does_not_fit_raises_at_declaration():
    hp = bridge(ask(), units=Fixed(2000))
    with pytest.raises(AutodlError, match="units=2000 is not allowed: units takes int 32..1024"):
        hp.Int("units", 32, 1024)
    hp = bridge(None, act=Fixed("swish"))
    with pytest.raises(AutodlError, match="act='swish' is not allowed"):
        hp.Choice("act", ["relu", "gelu"])


@pytest.mark.parametrize("method", ["merge", "ensure_active_values"])
def test_unsupported_methods_name_themselves(method):
    hp = bridge(ask())
    with pytest.raises(TypeError, match=rf"hp\.{method}\(\) is not supported"):
        if method == "merge":
            hp.merge(keras_tuner.HyperParameters())
        else:
            hp.ensure_active_values()


def test_spec_from_keras_tuner():
    kt = keras_tuner.engine.hyperparameters
    assert spec_from_keras_tuner(kt.Int("a", 1, 5)) == IntRange(1, 5)
    assert spec_from_keras_tuner(kt.Int("a", 0, 30, step=10)) == IntRange(0, 30, 10)
    assert spec_from_keras_tuner(kt.Float("a", 0.0, 0.6, step=0.1)) == FloatRange(0.0, 0.6, 0.1)
    assert spec_from_keras_tuner(kt.Boolean("a")) == Choice((False, True))
    assert spec_from_keras_tuner(kt.Fixed("a", "x")) == Fixed("x")
    assert spec_from_keras_tuner(kt.Choice("a", ["x", "y"])) == Choice(("x", "y"))


# --- the same hypermodel under KerasTuner and under the bridge ---------------------------------


def structure(model: keras.Model) -> list[tuple[str, tuple, int]]:
    return [(type(layer).__name__, tuple(layer.output.shape), layer.count_params())
            for layer in model.layers]


def tiny_data(n: int = 24, shape=(8, 8, 1), classes: int = 3):
    rng = np.random.default_rng(0)
    return rng.random((n, *shape), dtype=np.float32), np.arange(n) % classes


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # KerasTuner's threading calls
@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_keras_tuner_and_the_bridge_build_the_same_model(arch, tmp_path):
    x, y = tiny_data()
    hypermodel = registry.instantiate(registry.find(arch), x.shape[1:], 3)
    tuner = keras_tuner.RandomSearch(
        hypermodel, objective="val_accuracy", max_trials=1, seed=3,
        directory=str(tmp_path), project_name=arch, overwrite=True,
        optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"],
    )
    tuner.search(x, y, validation_data=(x, y), epochs=1, batch_size=12, verbose=0)
    values = tuner.oracle.get_best_trials(1)[0].hyperparameters.values
    kt_model = hypermodel.build(tuner.get_best_hyperparameters(1)[0])
    keras.backend.clear_session()

    # the same values, forced through the user's overrides, under a real Optuna trial
    trial = ask()
    hp = OptunaHyperParameters(Space({k: Fixed(v) for k, v in values.items()}), trial)
    model = hypermodel.build(hp)
    assert hp.values == values
    assert trial.params == {}  # every one was fixed: nothing suggested
    assert structure(model) == structure(kt_model)
    assert model.count_params() == kt_model.count_params()


def test_bridge_suggestions_rebuild_identically_under_keras_tuner():
    x, _ = tiny_data()
    hypermodel = registry.instantiate(registry.find("cnn"), x.shape[1:], 3)
    trial = ask({"depth": 3, "head": "flatten"})
    hp = OptunaHyperParameters(Space(), trial)
    model = hypermodel.build(hp)
    # batch_norm and augment are fixed off by default, kernel_size at 3: not suggestions
    assert hp.values == trial.params | {"batch_norm": False, "augment": False,
                                        "kernel_size": 3}
    assert len(trial.params) == 5
    keras.backend.clear_session()
    kt_hp = keras_tuner.HyperParameters()
    for name, value in hp.values.items():
        kt_hp.Fixed(name, value)
    kt_model = hypermodel.build(kt_hp)
    assert kt_hp.values == hp.values
    assert structure(model) == structure(kt_model)
    assert [type(layer).__name__ for layer in model.layers].count("Conv2D") == 3


# --- KerasTuner's private API: not used -----------------------------------------------------


def test_the_bridge_overrides_no_private_keras_tuner_method():
    """Only public methods are hooked: KerasTuner's private ones may change in any release."""
    hooked = {name for name in vars(OptunaHyperParameters)
              if hasattr(keras_tuner.HyperParameters, name) and not name.startswith("__")}
    assert hooked == {"Choice", "Int", "Float", "Boolean", "Fixed", "merge",
                      "ensure_active_values"}
    assert not [name for name in hooked if name.startswith("_")]


def test_values_come_from_the_trial_when_keras_tuner_renames_its_register(monkeypatch):
    """A KerasTuner whose ``_register`` has another name still has every value suggested."""
    register = keras_tuner.HyperParameters._register
    monkeypatch.delattr(keras_tuner.HyperParameters, "_register")
    monkeypatch.setattr(keras_tuner.HyperParameters, "_register_renamed", register,
                        raising=False)

    def retrieve(self, hp):
        if self._exists(hp.name, hp.conditions):
            return self.values[hp.name] if self.is_active(hp) else None
        return self._register_renamed(hp)

    monkeypatch.setattr(keras_tuner.HyperParameters, "_retrieve", retrieve)
    trial = ask({"kind": "conv", "pool": "max", "pool_size": 3, "filters": 12})
    hp = bridge(trial)
    values = conditional_build(hp)
    assert values["units"] is None and values["pool_size"] == 3 and values["filters"] == 12
    assert set(trial.params) == {"kind", "filters", "pool", "pool_size", "conv_dropout"}
    assert hp.values == trial.params
