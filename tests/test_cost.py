"""Trial cost: FLOPs counted from the model, the default spaces' caps, dear trials pruned."""

from __future__ import annotations

import itertools
import math
import time

import keras
import keras_tuner
import optuna
import pytest
from conftest import make_images
from optuna.distributions import CategoricalDistribution

from autodl import registry
from autodl.config import TRAINING_SPACE, Choice, Fixed, FloatRange, IntRange, Space
from autodl.cost import flops_cap, forward_flops
from autodl.datasets import Dataset, make_splits
from autodl.hyperparameters import OptunaHyperParameters
from autodl.objectives import ACCURACY
from autodl.pruners import PRUNERS
from autodl.samplers import SAMPLERS
from autodl.storage import TrialAttr
from autodl.trial import TrialRunner, build_model, declare_training, dry_build

TASKS = [(8, 8, 1), (28, 28, 1), (32, 32, 3)]


def test_forward_flops_counts_every_kernel_at_every_output_position():
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(32, 3, padding="same")(inputs)  # 28*28 positions
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.SeparableConv2D(8, 3)(x)  # 12*12 positions, two kernels
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(10)(x)
    inner = keras.Model(inputs, outputs)
    outer = keras.Sequential([keras.Input((28, 28, 1)), inner])  # nested models count
    expected = 2 * (28 * 28 * 3 * 3 * 32 + 12 * 12 * (3 * 3 * 32 + 32 * 8) + 1152 * 10)
    assert forward_flops(inner) == expected
    assert forward_flops(outer) == expected


def _corners(specs: dict) -> list[dict]:
    """Every combination of the choices and of the integer ranges' ends (floats at low)."""
    options = {}
    for name, spec in specs.items():
        if isinstance(spec, Choice):
            options[name] = spec.values
        elif isinstance(spec, IntRange):
            options[name] = (spec.low, spec.high)
        elif isinstance(spec, FloatRange):
            options[name] = (spec.low,)
        else:
            options[name] = (spec.value,)
    return [dict(zip(options, values, strict=True))
            for values in itertools.product(*options.values())]


@pytest.mark.parametrize(("arch", "shape"), [
    *[(arch, shape) for arch in ("mlp", "cnn") for shape in TASKS],
    ("mobilenetv2", (32, 32, 3)),
])
def test_default_space_builds_nothing_beyond_the_tasks_cap(arch, shape):
    options = {"weights": "none"} if arch == "mobilenetv2" else {}
    hypermodel = registry.instantiate(registry.find(arch), shape, 10, **options)
    specs = {name: spec for name, spec in dry_build(hypermodel, Space()).specs.items()
             if name not in TRAINING_SPACE}
    dearest = 0
    for values in _corners(specs):
        hp = OptunaHyperParameters(Space({name: Fixed(v) for name, v in values.items()}))
        declare_training(hp, hypermodel)
        dearest = max(dearest, forward_flops(build_model(hypermodel, hp)))
        keras.backend.clear_session()
    assert 0 < dearest <= flops_cap(shape), f"{arch} on {shape}: {dearest:,} FLOPs"


class Widths(keras_tuner.HyperModel):
    """Convolutions whose ``width`` 1024 (1.2 GFLOPs per example) is too dear for 8x8 images."""

    def build(self, hp):
        width = hp.Choice("width", [8, 64, 1024])
        inputs = keras.Input((8, 8, 1))
        x = keras.layers.Conv2D(width, 3, padding="same", activation="relu")(inputs)
        x = keras.layers.Conv2D(width, 3, padding="same", activation="relu")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        outputs = keras.layers.Dense(3, activation="softmax")(x)
        return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def splits():
    x, y = make_images(90)
    return make_splits(Dataset("tiny", x, y, ["0", "1", "2"]), seed=0)


def _runner(splits, space=None, **options) -> TrialRunner:
    return TrialRunner(Widths(), splits, space or Space(), epochs=2, patience=2, seed=0,
                       listener=type("Quiet", (), {"epoch_end": lambda *a: None})(),
                       save_model=lambda trial, model: None, **options)


def test_every_trial_records_its_cost_and_a_dear_one_is_pruned_untrained(splits):
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"width": 8})
    study.enqueue_trial({"width": 1024})
    study.enqueue_trial({"width": 1024})
    runner = _runner(splits)
    started = []
    study.optimize(lambda t: started.append(time.perf_counter()) or runner(t), n_trials=3)
    cheap, dear, again = study.trials
    for trial in (cheap, dear):
        assert trial.user_attrs[TrialAttr.FLOPS] == 2 * 8 * 8 * 9 * (
            trial.params["width"] + trial.params["width"] ** 2) + 2 * trial.params["width"] * 3
        assert trial.user_attrs[TrialAttr.EPOCH_FLOPS] == (
            3 * trial.user_attrs[TrialAttr.FLOPS] * len(splits.y_train))
    assert cheap.state == optuna.trial.TrialState.COMPLETE
    assert cheap.constraints["cost"] <= 0
    assert dear.state == optuna.trial.TrialState.PRUNED
    assert dear.user_attrs[TrialAttr.STOPPED_EPOCH] == 0 and not dear.intermediate_values
    assert "too costly" in dear.user_attrs[TrialAttr.PRUNED_BECAUSE]
    assert dear.constraints["cost"] > 0
    # A repeated dear configuration costs a build, not training.
    assert (again.datetime_complete - again.datetime_start).total_seconds() < 1.0


def test_the_default_sampler_does_not_suggest_a_known_too_costly_configuration_again(splits):
    # Optuna's TPE draws its first 10 trials at random; from then on it models the study,
    # and the dear width, pruned untrained with its cost constraint, must stay behind it.
    startup = 10
    study = optuna.create_study(direction="maximize", sampler=SAMPLERS["tpe"](0, (ACCURACY,)))
    study.enqueue_trial({"width": 1024})
    study.optimize(_runner(splits), n_trials=startup + 6)
    dear = [t for t in study.trials if t.params["width"] == 1024]
    assert dear[0].number == 0 and all(
        t.state == optuna.trial.TrialState.PRUNED and t.constraints["cost"] > 0 for t in dear)
    assert [t.number for t in dear if t.number >= startup] == []


def test_a_dear_trial_is_judged_and_stopped_inside_its_first_epoch(splits):
    study = optuna.create_study(direction="maximize",
                                pruner=PRUNERS["sha"](2, (ACCURACY,), splits.y_val, 2))
    # A perfect trial whose epoch costs one FLOP: every real model is dearer, and none
    # can be as good at its rungs.
    study.add_trial(optuna.trial.create_trial(
        state=optuna.trial.TrialState.COMPLETE, value=1.0, intermediate_values={1: 1.0},
        params={"width": 8}, distributions={"width": CategoricalDistribution([8, 64, 1024])},
        user_attrs={TrialAttr.EPOCH_FLOPS: 1.0}))
    study.enqueue_trial({"width": 64})
    # Several batches an epoch: the first crosses rungs, and the check comes after it.
    runner = _runner(splits, Space({"batch_size": Fixed(16)}))
    steps = math.ceil(len(splits.y_train) / 16)
    assert steps > 1
    study.optimize(runner, n_trials=1)
    dear = study.trials[1]
    assert dear.state == optuna.trial.TrialState.PRUNED
    assert dear.user_attrs[TrialAttr.PRUNED_BECAUSE] == (
        f"pruned at {1 / steps:.0%} of epoch 1, below a rung of equal training cost")
    assert dear.user_attrs[TrialAttr.STOPPED_EPOCH] == 1  # the part-epoch is recorded
    assert list(dear.intermediate_values) == [1]
