"""Image augmentation: off unless asked for, searched under its switch, active only in training."""

from __future__ import annotations

import re

import keras
import numpy as np
import optuna
import pytest
from conftest import make_images, tune_args

from autodl import registry
from autodl.cli import main
from autodl.config import Choice, Fixed, FloatRange, Space
from autodl.errors import AutodlError
from autodl.hyperparameters import OptunaHyperParameters

FACTORS = ("rotation", "zoom", "translation", "contrast")
ON = {"augment": Fixed(True)}
L = keras.layers


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    yield
    keras.backend.clear_session(free_memory=False)


def build_cnn(space: dict, trial: optuna.Trial | None = None):
    """A cnn for 8x8 grayscale images, built through the bridge; returns ``(model, hp)``."""
    hp = OptunaHyperParameters(Space(space), trial)
    return registry.instantiate(registry.find("cnn"), (8, 8, 1), 3).build(hp), hp


def augmentation_layers(model: keras.Model) -> list[type]:
    return [type(layer) for layer in model.get_layer("augmentation").layers]


def test_off_by_default_without_its_factors():
    model, hp = build_cnn({})
    assert hp.specs["augment"] == Fixed(False) and hp.values["augment"] is False
    assert not {"flip", *FACTORS} & (set(hp.values) | set(hp.specs))
    assert "augmentation" not in [layer.name for layer in model.layers]
    assert isinstance(model.layers[1], L.Conv2D)
    # KerasTuner still sees the whole space: the factors, conditional on the switch.
    conditional = {h.name: h.conditions for h in hp.space if h.name in {"flip", *FACTORS}}
    assert set(conditional) == {"flip", *FACTORS}
    assert all(c[0].name == "augment" and c[0].values == [True] for c in conditional.values())


def test_on_searches_the_factors_but_not_flipping():
    model, hp = build_cnn(ON)
    assert hp.specs["flip"] == Fixed("none")  # flipping changes a digit's meaning
    assert {name: hp.specs[name] for name in FACTORS} == {
        "rotation": FloatRange(0.0, 0.1), "zoom": FloatRange(0.0, 0.2),
        "translation": FloatRange(0.0, 0.2), "contrast": FloatRange(0.0, 0.3),
    }
    assert model.layers[1].name == "augmentation"  # right after the input
    assert augmentation_layers(model) == [L.RandomRotation, L.RandomZoom, L.RandomTranslation,
                                          L.RandomContrast]
    rotation, zoom, translation, contrast = model.get_layer("augmentation").layers
    assert rotation.get_config()["factor"] == (-hp.values["rotation"], hp.values["rotation"])
    assert zoom.get_config()["height_factor"] == hp.values["zoom"]
    assert translation.get_config()["width_factor"] == hp.values["translation"]
    assert contrast.get_config()["factor"] == (0, hp.values["contrast"])
    assert contrast.get_config()["value_range"] == (0.0, 1.0)  # autodl's pixels


def test_flip_is_searched_when_asked_for():
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"flip": "horizontal"})
    trial = study.ask()
    model, _ = build_cnn({**ON, "flip": Choice(("none", "horizontal"))}, trial)
    assert trial.params["flip"] == "horizontal"
    assert trial.distributions["flip"] == optuna.distributions.CategoricalDistribution(
        ["none", "horizontal"])
    flip = model.get_layer("augmentation").layers[0]
    assert isinstance(flip, L.RandomFlip) and flip.get_config()["mode"] == "horizontal"
    with pytest.raises(AutodlError, match="flip: 'diagonal' not allowed: flip takes one of "
                                          "'none', 'horizontal', 'vertical'"):
        build_cnn({**ON, "flip": Choice(("none", "diagonal"))})


def test_factors_are_suggested_only_while_augment_is_on():
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"augment": False})
    study.enqueue_trial({"augment": True})
    searched = {"augment": Choice((False, True))}
    off, on = study.ask(), study.ask()
    build_cnn(searched, off)
    build_cnn(searched, on)
    assert off.params["augment"] is False and not set(FACTORS) & set(off.params)
    assert on.params["augment"] is True and set(FACTORS) <= set(on.params)
    assert "flip" not in on.params  # fixed by the shared default: not a suggestion


def test_a_zero_factor_leaves_its_layer_out():
    model, _ = build_cnn({**ON, "rotation": Fixed(0.0), "zoom": Fixed(0)})
    assert augmentation_layers(model) == [L.RandomTranslation, L.RandomContrast]
    model, hp = build_cnn({**ON, **{name: Fixed(0.0) for name in FACTORS}})
    assert hp.values["augment"] is True
    assert isinstance(model.layers[1], L.Conv2D)  # nothing left to augment with


def test_augmentation_changes_training_inputs_only():
    model, _ = build_cnn({**ON, "flip": Fixed("horizontal"), "dropout": Fixed(0.0)})
    assert augmentation_layers(model)[0] is L.RandomFlip
    x, y = make_images(8)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)

    x, _ = make_images(6, seed=1)
    expected = model.predict(x, verbose=0)
    np.testing.assert_array_equal(model.predict(x, verbose=0), expected)
    # A call without `training`, as Keras's SavedModel and ONNX exporters make, is inference.
    for output in (model(x, training=False), model(x)):
        np.testing.assert_allclose(output, expected, atol=1e-6)
    bypassed = x  # the same model without its augmentation
    for layer in model.layers[2:]:
        bypassed = layer(bypassed)
    np.testing.assert_allclose(bypassed, expected, atol=1e-6)
    assert np.max(np.abs(model(x, training=True) - expected)) > 1e-3


def test_trained_model_saves_and_loads_safely(tmp_path):
    model, _ = build_cnn({**ON, "flip": Fixed("vertical")})
    x, _ = make_images(4)
    expected = model.predict(x, verbose=0)
    model.save(tmp_path / "augmented.keras")
    loaded = keras.models.load_model(tmp_path / "augmented.keras", safe_mode=True)
    assert augmentation_layers(loaded) == augmentation_layers(model)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, atol=1e-6)


def test_plugins_lists_the_switches(capsys):
    assert main(["plugins", "cnn", "--input-shape", "8,8,1", "--classes", "3"]) == 0
    listing = capsys.readouterr().out
    assert re.search(r"batch_norm\s+fixed False", listing)
    assert re.search(r"augment\s+fixed False", listing)


def test_tune_with_batch_norm_and_augmentation_end_to_end(in_tmp, tiny_npz, capsys):
    args = tune_args(f"npz:{tiny_npz}", "--study", "aug", "--pruner", "none",
                     "--set", "batch_norm=true", "--set", "augment=true", arch="cnn", trials=1)
    assert main(args) == 0
    trial = optuna.load_study(study_name="aug", storage="sqlite:///studies/autodl.db").trials[0]
    values = trial.user_attrs["hyperparameters"]
    assert values["batch_norm"] is True and values["augment"] is True
    assert values["flip"] == "none"
    assert set(FACTORS) <= set(trial.params)  # searched; the switches were fixed by --set
    assert not {"batch_norm", "augment", "flip"} & set(trial.params)

    model = keras.models.load_model(in_tmp / "studies" / "models" / "aug.keras", safe_mode=True)
    assert augmentation_layers(model) == [L.RandomRotation, L.RandomZoom, L.RandomTranslation,
                                          L.RandomContrast]
    assert any(isinstance(layer, L.BatchNormalization) for layer in model.layers)
    # The SavedModel export checks itself against the stored model; predict agrees with both.
    assert main(["export", "aug", "--out", "exported", "--format", "savedmodel"]) == 0
    x, _ = make_images(5, seed=2)
    np.savez(in_tmp / "x.npz", x=x)
    capsys.readouterr()
    assert main(["predict", "exported", "x.npz"]) == 0
    printed = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    expected = model.predict(x, verbose=0)
    assert [int(label) for _, label, _ in printed] == list(expected.argmax(-1))  # class names
    np.testing.assert_allclose([float(p) for *_, p in printed], expected.max(-1), atol=1e-4)
