"""The built-in plugins: found through the registry, built, trained a step; transfer learning."""

from __future__ import annotations

import math
from pathlib import Path

import keras
import keras_tuner
import numpy as np
import optuna
import pytest

from autodl import registry
from autodl.config import Choice, Fixed, IntRange, Space
from autodl.errors import AutodlError
from autodl.hyperparameters import OptunaHyperParameters
from autodl.trial import dry_build

SHAPES = [(8, 8, 1), (28, 28, 1), (32, 32, 3)]
WEIGHTS_035 = "weights/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
WEIGHTS_05 = "weights/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5"
ALPHAS = (0.35, 0.5, 0.75, 1.0)


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    """Every test leaves Keras without its layers (no gc.collect: that costs ~0.4 s a test)."""
    yield
    keras.backend.clear_session(free_memory=False)


def hypermodel(arch: str, shape: tuple[int, ...], classes: int = 3, **options):
    return registry.instantiate(registry.find(arch), shape, classes, **options)


def build(model_maker, space: Space | None = None, trial: optuna.Trial | None = None):
    """Build through the bridge; returns ``(model, hp)``."""
    hp = OptunaHyperParameters(space or Space(), trial)
    return model_maker.build(hp), hp


def train_one_step(model: keras.Model, shape: tuple[int, ...], classes: int = 3,
                   eager: bool = False) -> float:
    """Compile as the trial runner does, fit one epoch of one batch; the weights must move."""
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(4, *shape)).astype("float32")
    y = np.arange(4) % classes
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"], run_eagerly=eager)
    before = [w.numpy().copy() for w in model.trainable_weights]
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    loss = history.history["loss"][0]
    assert math.isfinite(loss)
    after = [w.numpy() for w in model.trainable_weights]
    assert any(not np.array_equal(b, a) for b, a in zip(before, after, strict=True))
    probabilities = model.predict(x, verbose=0)
    assert probabilities.shape == (4, classes)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-4)
    return loss


# --- the registry finds the built-ins ------------------------------------------------


@pytest.mark.parametrize("arch", ["mlp", "cnn", "mobilenetv2"])
def test_builtin_found_through_the_registry(arch: str):
    plugin = registry.find(arch)
    assert plugin.name == arch and plugin.source == "built-in"
    target = plugin.load()
    assert issubclass(target, keras_tuner.HyperModel)
    assert target.__module__ == f"autodl.plugins.{arch}"
    assert plugin.description()  # the first docstring line, shown by `autodl plugins`


# --- mlp and cnn: build and train on every input shape -------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_builds_and_trains_one_step(arch: str, shape: tuple[int, ...]):
    model, hp = build(hypermodel(arch, shape, classes=3))
    assert model.name == arch
    assert tuple(model.input_shape[1:]) == shape and model.output_shape == (None, 3)
    train_one_step(model, shape)


def test_mlp_takes_tabular_input():
    model, _ = build(hypermodel("mlp", (13,), classes=2))
    train_one_step(model, (13,), classes=2)


def test_mlp_declares_its_hyperparameters():
    hp = dry_build(hypermodel("mlp", (8, 8, 1)), Space())
    assert hp.specs["depth"] == IntRange(2, 6)  # 1..6, cut to the shared default 2..20
    assert hp.specs["units"] == IntRange(32, 1024, 1, log=True)
    assert hp.specs["activation"] == Choice(("relu", "gelu", "tanh"))
    assert hp.specs["dropout"].low == 0.0 and hp.specs["dropout"].high == 0.5
    assert hp.specs["batch_norm"] == Fixed(False)  # off unless asked for: a shared default
    assert "augment" not in hp.specs  # not an image architecture


# --- batch normalization -------------------------------------------------------------


@pytest.mark.parametrize(("arch", "hidden"), [("mlp", keras.layers.Dense),
                                              ("cnn", keras.layers.Conv2D)])
def test_batch_norm_off_has_none(arch: str, hidden: type):
    model, hp = build(hypermodel(arch, (8, 8, 1)))
    assert hp.values["batch_norm"] is False
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
    assert all(layer.use_bias for layer in model.layers if isinstance(layer, hidden))


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_batch_norm_on_normalizes_every_hidden_layer_before_its_activation(arch: str):
    space = Space({"batch_norm": Fixed(True), "depth": Fixed(3)})
    model, hp = build(hypermodel(arch, (8, 8, 1)), space)
    assert hp.values["batch_norm"] is True
    layers = model.layers
    hidden = [i for i, layer in enumerate(layers[:-1])
              if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D))]
    assert len(hidden) == (3 if arch == "mlp" else 4)  # cnn: 3 convolutions and the dense head
    for i in hidden:  # layer (no bias) -> BatchNormalization -> activation
        assert not layers[i].use_bias and layers[i].activation.__name__ == "linear"
        assert isinstance(layers[i + 1], keras.layers.BatchNormalization)
        assert isinstance(layers[i + 2], keras.layers.Activation)
    norms = [layer for layer in layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == len(hidden)
    before = norms[0].moving_mean.numpy().copy()
    train_one_step(model, (8, 8, 1))
    assert not np.array_equal(norms[0].moving_mean.numpy(), before)  # trained in training mode


# --- cnn: depth depends on how often the input can be pooled -------------------------


@pytest.mark.parametrize(
    ("height", "width", "steps"),
    [(1, 1, 0), (3, 3, 0), (4, 4, 1), (7, 7, 1), (8, 8, 2), (28, 28, 3), (32, 32, 4),
     (32, 8, 2), (224, 224, 6)],
)
def test_cnn_pooling_steps(height: int, width: int, steps: int):
    from autodl.plugins.cnn import pooling_steps

    assert pooling_steps(height, width) == steps


@pytest.mark.parametrize(
    ("shape", "max_depth"),
    [((4, 4, 1), 2), ((8, 8, 1), 3), ((28, 28, 1), 4), ((32, 32, 3), 5), ((64, 64, 3), 6)],
)
def test_cnn_depth_range_shrinks_for_small_inputs(shape: tuple[int, ...], max_depth: int):
    cnn = hypermodel("cnn", shape)
    assert dry_build(cnn, Space()).specs["depth"] == IntRange(2, max_depth)
    # The plugin's own range, before the shared default cuts it to 2..: 1..max_depth.
    plain = keras_tuner.HyperParameters()
    cnn.build(plain)
    depth = next(hp for hp in plain.space if hp.name == "depth")
    assert (depth.min_value, depth.max_value) == (1, max_depth)


@pytest.mark.parametrize("shape", [(8, 8, 1), (28, 28, 1)], ids=lambda s: "x".join(map(str, s)))
def test_cnn_deepest_model_keeps_pixels_and_trains(shape: tuple[int, ...]):
    cnn = hypermodel("cnn", shape)
    deepest = dry_build(cnn, Space()).specs["depth"].high
    space = Space({"depth": Fixed(deepest), "head": Fixed("flatten"), "filters": Fixed(16)})
    model, hp = build(cnn, space)
    assert hp.values["depth"] == deepest
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    pools = [layer for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    assert len(convs) == deepest
    assert len(pools) == cnn.max_pools  # pooled as often as the input allows, no more
    assert min(convs[-1].output.shape[1:3]) >= 2
    assert convs[-1].filters == min(16 << (deepest - 1), 256)  # doubling per convolution
    train_one_step(model, shape)


def test_cnn_tiny_images_build_without_pooling():
    cnn = hypermodel("cnn", (3, 3, 1))
    model, hp = build(cnn)
    assert hp.values["depth"] == 1
    assert not any(isinstance(layer, keras.layers.MaxPooling2D) for layer in model.layers)


@pytest.mark.parametrize("shape", [(20,), (8, 8), (2, 8, 8, 1)])
def test_cnn_refuses_non_image_input(shape: tuple[int, ...]):
    with pytest.raises(AutodlError, match=r"arch cnn: cnn needs images \(height, width, chan"):
        hypermodel("cnn", shape)


# --- the bridge: an Optuna trial answers the plugin's hp calls -----------------------


def test_mlp_built_from_an_optuna_trial():
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"depth": 3, "units": 256, "activation": "tanh", "dropout": 0.25})
    trial = study.ask()
    model, hp = build(hypermodel("mlp", (8, 8, 1)), trial=trial)
    assert trial.params == {"depth": 3, "units": 256, "activation": "tanh", "dropout": 0.25}
    assert hp.values == trial.params | {"batch_norm": False}  # fixed: not a suggestion
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert [layer.units for layer in dense] == [256, 128, 64, 3]
    assert all(layer.activation.__name__ == "tanh" for layer in dense[:-1])
    dropouts = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert [layer.rate for layer in dropouts] == [0.25] * 3


def test_cnn_built_from_sampled_trials():
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(0))
    declared = {"depth", "filters", "head", "units", "dropout"}  # kernel_size: fixed at 3
    for _ in range(3):
        trial = study.ask()
        model, hp = build(hypermodel("cnn", (8, 8, 1)), trial=trial)
        assert set(trial.params) == declared
        assert hp.values == trial.params | {"batch_norm": False, "augment": False,
                                            "kernel_size": 3}
        assert trial.distributions["depth"] == optuna.distributions.IntDistribution(2, 3)
        convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
        assert len(convs) == trial.params["depth"]
        assert convs[0].filters == trial.params["filters"]
        assert convs[0].kernel_size == (3, 3)
        head = (keras.layers.Flatten if trial.params["head"] == "flatten"
                else keras.layers.GlobalAveragePooling2D)
        assert any(isinstance(layer, head) for layer in model.layers)
        study.tell(trial, 0.5)
        keras.backend.clear_session()


def test_mobilenetv2_built_from_an_optuna_trial(shared_datasets: Path):
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"fine_tune_layers": 20, "dropout": 0.5})
    trial = study.ask()
    mobilenet = hypermodel("mobilenetv2", (32, 32, 3), weights=str(shared_datasets / WEIGHTS_035))
    build(mobilenet, trial=trial)
    assert trial.params == {"alpha": 0.35, "fine_tune_layers": 20, "dropout": 0.5}
    assert trial.distributions["alpha"] == optuna.distributions.CategoricalDistribution([0.35])


# --- mobilenetv2 ---------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_mobilenetv2_from_scratch_builds_and_trains_one_step(shape: tuple[int, ...]):
    mobilenet = hypermodel("mobilenetv2", shape, weights="none")
    assert mobilenet.size == 96 and mobilenet.alphas == ALPHAS
    model, hp = build(mobilenet, Space({"alpha": Fixed(0.35)}))
    # no fine-tuning without pretrained weights
    assert set(hp.values) == {"alpha", "dropout", "augment"}
    assert tuple(model.input_shape[1:]) == shape and model.output_shape == (None, 3)
    assert any(isinstance(layer, keras.layers.Resizing) for layer in model.layers)
    base = model.get_layer("mobilenetv2_0.35_96")
    assert base.input_shape[1:] == (96, 96, 3)
    assert all(layer.trainable for layer in base.layers)  # batch normalization too
    # Graph-mode tracing of MobileNetV2 takes ~15 s on a CPU; one eager step is enough here
    # (the transfer-learning test below trains it in graph mode).
    train_one_step(model, shape, eager=True)


def test_mobilenetv2_augments_at_the_input_as_cnn_does():
    on = Space({"augment": Fixed(True), "alpha": Fixed(0.35)})
    model, hp = build(hypermodel("mobilenetv2", (8, 8, 1), weights="none"), on)
    # Before the grayscale-to-RGB and the resizing: augmenting the small image is cheaper.
    assert [type(layer) for layer in model.layers[1:4]] == [
        keras.Sequential, keras.layers.Concatenate, keras.layers.Resizing]
    assert model.layers[1].name == "augmentation"
    cnn = dry_build(hypermodel("cnn", (8, 8, 1)), on)
    names = ("augment", "flip", "rotation", "zoom", "translation", "contrast")
    assert {name: hp.specs[name] for name in names} == {name: cnn.specs[name] for name in names}


@pytest.mark.parametrize(
    ("side", "size"), [(8, 96), (96, 96), (97, 128), (150, 160), (224, 224), (300, 224)]
)
def test_mobilenetv2_resizes_to_the_next_published_size(side: int, size: int):
    assert hypermodel("mobilenetv2", (side, side, 3), weights="none").size == size


@pytest.mark.parametrize("shape", [(20,), (32, 32, 2), (32, 32, 4), (32, 32)])
def test_mobilenetv2_refuses_other_inputs(shape: tuple[int, ...]):
    with pytest.raises(AutodlError, match="arch mobilenetv2: mobilenetv2 needs RGB or grayscale"):
        hypermodel("mobilenetv2", shape, weights="none")


def test_mobilenetv2_weights_file_sets_alpha(shared_datasets: Path):
    path = shared_datasets / WEIGHTS_035
    mobilenet = hypermodel("mobilenetv2", (28, 28, 1), weights=str(path))
    assert mobilenet.alphas == (0.35,) and mobilenet.weights == str(path)
    hp = dry_build(mobilenet, Space())
    assert hp.specs["alpha"] == Choice((0.35,))
    assert hp.specs["fine_tune_layers"] == IntRange(0, 30, 10)
    assert hypermodel("mobilenetv2", (28, 28, 1),
                      weights=str(shared_datasets / WEIGHTS_05)).alphas == (0.5,)
    # The alpha of a file is all there is: asking for another is refused.
    with pytest.raises(AutodlError, match="alpha=0.75 is not allowed"):
        build(mobilenet, Space({"alpha": Fixed(0.75)}))


def test_mobilenetv2_weights_file_with_another_name(shared_datasets: Path, tmp_path: Path):
    renamed = tmp_path / "my_backbone.h5"
    renamed.symlink_to(shared_datasets / WEIGHTS_035)
    mobilenet = hypermodel("mobilenetv2", (32, 32, 3), weights=str(renamed))
    assert mobilenet.alphas == ALPHAS  # unknown: the user picks it with --set alpha=
    model, hp = build(mobilenet, Space({"alpha": Fixed(0.35)}))
    assert hp.values["alpha"] == 0.35


def test_mobilenetv2_loads_the_weights_and_freezes_the_base(shared_datasets: Path):
    import h5py

    path = shared_datasets / WEIGHTS_035
    mobilenet = hypermodel("mobilenetv2", (28, 28, 1), weights=str(path))
    model, hp = build(mobilenet)
    assert hp.values["fine_tune_layers"] == 0
    base = model.get_layer("mobilenetv2_0.35_96")
    with h5py.File(path, "r") as weights:
        expected = weights["Conv1"]["Conv1"]["kernel:0"][()]
    np.testing.assert_array_equal(base.get_layer("Conv1").kernel.numpy(), expected)
    # Only the new head trains: the Dense layer's kernel and bias.
    assert [w.shape for w in model.trainable_weights] == [(1280, 3), (3,)]
    assert any(isinstance(layer, keras.layers.Concatenate) for layer in model.layers)
    train_one_step(model, (28, 28, 1), eager=True)
    np.testing.assert_array_equal(base.get_layer("Conv1").kernel.numpy(), expected)


def test_mobilenetv2_fine_tunes_top_layers_but_not_batch_norm(shared_datasets: Path):
    mobilenet = hypermodel("mobilenetv2", (32, 32, 3), weights=str(shared_datasets / WEIGHTS_035))
    model, _ = build(mobilenet, Space({"fine_tune_layers": Fixed(20)}))
    base = model.get_layer("mobilenetv2_0.35_96")
    trainable = [layer for layer in base.layers if layer.trainable]
    assert trainable and set(trainable) <= set(base.layers[-20:])
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in trainable)
    assert any(layer.trainable_weights for layer in trainable)
    assert not any(layer.trainable for layer in base.layers[:-20])


def test_mobilenetv2_missing_weights_file(tmp_path: Path):
    missing = tmp_path / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
    with pytest.raises(AutodlError, match="weights file not found") as error:
        hypermodel("mobilenetv2", (32, 32, 3), weights=str(missing))
    assert str(missing) in str(error.value)


def test_mobilenetv2_imagenet_offline_says_how_to_fix(empty_keras_home: Path, offline):
    with pytest.raises(AutodlError) as error:
        hypermodel("mobilenetv2", (32, 32, 3), weights="imagenet")
    message = str(error.value)
    assert message.startswith("arch mobilenetv2: MobileNetV2 ImageNet weights")
    assert "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5" in message
    assert str(empty_keras_home / "models") in message
    assert "copy the file there" in message
    assert "--weights PATH.h5" in message and "--weights none" in message


def test_mobilenetv2_imagenet_from_the_keras_cache(
    shared_datasets: Path, empty_keras_home: Path, offline
):
    models = empty_keras_home / "models"
    models.mkdir()
    for weights in (WEIGHTS_035, WEIGHTS_05):  # as Keras names them: the 224 files
        (models / Path(weights).name).symlink_to(shared_datasets / weights)
    mobilenet = hypermodel("mobilenetv2", (224, 224, 3), weights="imagenet")
    assert mobilenet.alphas == (0.35, 0.5) and mobilenet.weights == "imagenet"
    model, hp = build(mobilenet)  # offline: Keras must find the file in the cache
    assert hp.values["alpha"] == 0.35
    assert not any(isinstance(layer, keras.layers.Resizing) for layer in model.layers)
    assert len(model.trainable_weights) == 2


# --- transfer learning on real photos ------------------------------------------------


def _tune_flowers(shared_datasets: Path, study: str, weights: str, *extra: str) -> float:
    from autodl.cli import main

    args = [
        "tune", "--arch", "mobilenetv2", "--study", study,
        "--dataset", f"images:{shared_datasets / 'flower_photos_small_set'}",
        "--weights", weights, "--image-size", "96",
        "--set", "alpha=0.35", "--set", "learning_rate=0.003", "--set", "optimizer=adam",
        "--set", "batch_size=16", "--set", "dropout=0.0", "--set", "weight_decay=0",
        "--trials", "1", "--epochs", "5", "--patience", "2", "--seed", "0", "--pruner", "none",
        *extra,
    ]
    assert main(args) == 0
    loaded = optuna.load_study(study_name=study, storage="sqlite:///studies/autodl.db")
    assert loaded.best_trial.user_attrs["hyperparameters"]["alpha"] == 0.35
    return loaded.user_attrs["test"]["accuracy"]


@pytest.mark.slow
def test_imagenet_weights_beat_training_from_scratch(shared_datasets: Path, in_tmp: Path):
    weights = str(shared_datasets / WEIGHTS_035)
    pretrained = _tune_flowers(shared_datasets, "imagenet", weights, "--set", "fine_tune_layers=0")
    scratch = _tune_flowers(shared_datasets, "scratch", "none")
    # Measured on a CPU: 0.80 with ImageNet features (0.65 to 0.80 over seeds 0 to 3), and
    # 0.20 (chance: one class for everything) from scratch, which stops after 3 epochs.
    assert pretrained >= 0.6, (pretrained, scratch)
    assert scratch <= 0.4, (pretrained, scratch)
    assert pretrained - scratch >= 0.3
    assert (in_tmp / "studies" / "models" / "imagenet.keras").is_file()
