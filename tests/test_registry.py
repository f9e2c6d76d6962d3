"""The plugin registry: built-ins, KerasTuner's hypermodels, plugin files, entry points."""

from __future__ import annotations

import inspect
import sys
import textwrap
from importlib.metadata import EntryPoint
from pathlib import Path

import keras
import keras_tuner
import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from autodl import registry
from autodl.augmentation import AugmentedApplication
from autodl.cli import main
from autodl.config import Fixed, Space
from autodl.errors import AutodlError
from autodl.hyperparameters import OptunaHyperParameters
from autodl.plugin import BuildFunction
from autodl.trial import dry_build

BUILT_INS = {"mlp": "MLP", "cnn": "CNN", "mobilenetv2": "MobileNetV2"}


def write(folder: Path, name: str, code: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(code), encoding="utf-8")
    return path


def dry(hypermodel) -> tuple[keras.Model, OptunaHyperParameters]:
    hp = OptunaHyperParameters(Space())
    return hypermodel.build(hp), hp


# --- registered plugins ---------------------------------------------------------------------


@pytest.mark.parametrize(("name", "class_name"), BUILT_INS.items())
def test_built_ins_are_found_through_entry_points(name, class_name):
    plugin = registry.find(name)
    assert plugin.name == name
    assert plugin.source == "built-in"
    target = plugin.load()
    assert target.__name__ == class_name
    assert target.__module__ == f"autodl.plugins.{name}"
    assert issubclass(target, keras_tuner.HyperModel)
    assert plugin.description() == inspect.getdoc(target).splitlines()[0]


def test_available_lists_built_ins_first_then_keras_tuner():
    plugins = registry.available()
    names = [p.name for p in plugins]
    assert names[:3] == sorted(BUILT_INS)
    assert names[-3:] == ["kt:HyperResNet", "kt:HyperXception", "kt:HyperEfficientNet"]
    assert {p.source for p in plugins if p.name.startswith("kt:")} == {"keras-tuner"}
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("name", ["resnet", "MLP", "kt:HyperNope", "kt:", ""])
def test_unknown_arch_lists_the_choices(name):
    with pytest.raises(AutodlError) as error:
        registry.find(name)
    message = str(error.value)
    assert message.startswith(f"unknown arch {name!r}; choose from ")
    for choice in [*BUILT_INS, "kt:HyperResNet", "kt:HyperXception"]:
        assert choice in message
    assert "path.py" in message


# --- KerasTuner's hypermodels -----------------------------------------------------------------


def test_kt_hyper_resnet_builds_and_trains_a_step(monkeypatch):
    plugin = registry.find("kt:HyperResNet")
    assert (plugin.name, plugin.source) == ("kt:HyperResNet", "keras-tuner")
    assert plugin.load() is keras_tuner.applications.HyperResNet
    assert plugin.description() == "A ResNet hypermodel."
    # HyperResNet has no weights option: it builds from scratch, and --weights is refused.
    assert "weights" not in inspect.signature(keras_tuner.applications.HyperResNet).parameters
    with pytest.raises(AutodlError, match="--weights does not apply to arch kt:HyperResNet"):
        registry.instantiate(plugin, (32, 32, 3), 10, weights="imagenet")

    hypermodel = registry.instantiate(plugin, (32, 32, 3), 10)
    assert isinstance(hypermodel, AugmentedApplication)
    resnet = hypermodel.application
    assert isinstance(resnet, keras_tuner.applications.HyperResNet)
    assert (resnet.input_shape, resnet.classes, resnet.input_tensor) == ((32, 32, 3), 10, None)

    def no_download(*args, **kwargs):
        raise AssertionError("HyperResNet must not download weights")

    monkeypatch.setattr(keras.utils, "get_file", no_download)
    monkeypatch.setattr(keras.src.utils.file_utils, "get_file", no_download)
    try:
        # With augmentation on, to train a step through it too.
        hp = OptunaHyperParameters(Space({"augment": Fixed(True)}))
        model = hypermodel.build(hp)
        assert resnet.input_tensor is None  # lent for the build only
        assert {"version", "conv3_depth", "conv4_depth", "pooling"} <= set(hp.specs)
        assert model.layers[1].name == "augmentation"  # right after the input
        assert model.input_shape == (None, 32, 32, 3)
        assert model.output_shape == (None, 10)
        assert not model.compiled  # autodl compiles it, as the trial runner does here
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                      run_eagerly=True)  # one step: tracing ResNet's graph would take far longer
        rng = np.random.default_rng(0)
        x = rng.random((4, 32, 32, 3), dtype=np.float32)
        y = np.arange(4) % 10
        before = [w.numpy().copy() for w in model.trainable_weights[:3]]
        loss = model.train_on_batch(x, y)
        loss = loss[0] if isinstance(loss, list) else loss
        assert np.isfinite(loss)
        after = [w.numpy() for w in model.trainable_weights[:3]]
        assert any(not np.array_equal(b, a) for b, a in zip(before, after, strict=True))
    finally:
        keras.backend.clear_session()


@pytest.mark.parametrize("name", registry.KERAS_TUNER_HYPERMODELS)
def test_kt_hypermodels_augment_as_the_built_in_image_plugins_do(name):
    hypermodel = registry.instantiate(registry.find(f"kt:{name}"), (32, 32, 3), 10)
    assert isinstance(hypermodel, AugmentedApplication)
    assert type(hypermodel.application) is getattr(keras_tuner.applications, name)
    assert hypermodel.name == hypermodel.application.name


def test_kt_hyper_resnet_declares_the_cnn_augmentation_space():
    on = Space({"augment": Fixed(True)})
    names = ("augment", "flip", "rotation", "zoom", "translation", "contrast")
    specs = {}
    for arch in ("kt:HyperResNet", "cnn"):
        hp = dry_build(registry.instantiate(registry.find(arch), (32, 32, 3), 10), on)
        specs[arch] = {name: hp.specs[name] for name in names}
    assert specs["kt:HyperResNet"] == specs["cnn"]
    hp = dry_build(registry.instantiate(registry.find("kt:HyperResNet"), (32, 32, 3), 10), Space())
    assert hp.specs["augment"] == Fixed(False) and "rotation" not in hp.specs


# --- plugin files -----------------------------------------------------------------------------

BUILD_FUNCTION = '''
"""A tiny dense net, as a build function."""
import keras


def build(hp):
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(hp.Int("units", 4, 16), activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
'''

BUILD_WITH_FACTS = '''
import keras

seen = {}


def build(hp, input_shape, num_classes):
    seen.update(input_shape=input_shape, num_classes=num_classes)
    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(hp.Int("units", 4, 16), activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))
'''

ONE_CLASS = '''
"""Module docstring of a one-class plugin."""
import keras
import keras_tuner
from keras_tuner import HyperModel  # imported, so not this file's plugin


class Net(keras_tuner.HyperModel):
    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.input_shape, self.num_classes = input_shape, num_classes

    def build(self, hp):
        inputs = keras.Input(self.input_shape)
        x = keras.layers.Flatten()(inputs)
        x = keras.layers.Dropout(hp.Float("dropout", 0.0, 0.9))(x)
        return keras.Model(inputs, keras.layers.Dense(self.num_classes)(x))
'''

TWO_CLASSES = '''
import keras
import keras_tuner


class Small(keras_tuner.HyperModel):
    """The small one."""

    def __init__(self, input_shape, classes):
        super().__init__()
        self.input_shape, self.classes = input_shape, classes

    def build(self, hp):
        inputs = keras.Input(self.input_shape)
        x = keras.layers.Flatten()(inputs)
        return keras.Model(inputs, keras.layers.Dense(self.classes)(x))


class Large(Small):
    """The large one."""


NOT_A_PLUGIN = 3
'''


def test_file_with_a_build_function(tmp_path):
    path = write(tmp_path, "dense_net.py", BUILD_FUNCTION)
    assert registry.is_file_spec(str(path))
    plugin = registry.find(str(path))
    assert (plugin.name, plugin.source) == ("dense_net", f"file {path}")
    assert plugin.load().__name__ == "build"
    assert plugin.load() is plugin.load()  # imported once
    assert plugin.description() == "A tiny dense net, as a build function."
    hypermodel = registry.instantiate(plugin, (8, 8, 1), 3)
    assert isinstance(hypermodel, keras_tuner.HyperModel)
    # wrapped by a class, as KerasTuner's DefaultHyperModel wraps a function
    assert type(hypermodel) is BuildFunction and hypermodel.function is plugin.load()
    model, hp = dry(hypermodel)
    assert isinstance(model, keras.Model) and hp.values == {"units": 4}


def test_build_function_gets_the_task_facts_it_asks_for(tmp_path):
    path = write(tmp_path, "facts.py", BUILD_WITH_FACTS)
    plugin = registry.find(str(path))
    hypermodel = registry.instantiate(plugin, (6, 5, 2), 7)
    model, _ = dry(hypermodel)
    module = sys.modules[plugin.load().__module__]
    assert module.seen == {"input_shape": (6, 5, 2), "num_classes": 7}
    assert model.input_shape == (None, 6, 5, 2) and model.output_shape == (None, 7)


def test_file_with_one_hypermodel_class(tmp_path):
    path = write(tmp_path, "one.py", ONE_CLASS)
    plugin = registry.find(str(path))
    assert plugin.name == "one"
    target = plugin.load()
    assert target.__name__ == "Net"
    # A class without a docstring is described by its module, not by keras_tuner.HyperModel.
    assert plugin.description() == "Module docstring of a one-class plugin."
    hypermodel = registry.instantiate(plugin, (4, 4, 1), 5)
    assert isinstance(hypermodel, target)
    assert (hypermodel.input_shape, hypermodel.num_classes) == ((4, 4, 1), 5)
    model, hp = dry(hypermodel)
    assert model.output_shape == (None, 5) and hp.values == {"dropout": 0.0}


def test_file_with_two_classes_needs_a_name(tmp_path):
    path = write(tmp_path, "two.py", TWO_CLASSES)
    with pytest.raises(AutodlError) as error:
        registry.find(str(path)).load()
    message = str(error.value)
    assert str(path) in message
    assert "several HyperModel classes (Small, Large)" in message
    assert f"pick one: {path}:NAME" in message

    plugin = registry.find(f"{path}:Large")
    assert (plugin.name, plugin.source) == ("Large", f"file {path}")
    assert plugin.load().__name__ == "Large"
    assert plugin.description() == "The large one."
    hypermodel = registry.instantiate(plugin, (3, 3, 1), 4)
    assert hypermodel.classes == 4  # KerasTuner's name for the class count
    assert dry(hypermodel)[0].output_shape == (None, 4)

    with pytest.raises(AutodlError, match=f"{path} has no 'Medium'"):
        registry.find(f"{path}:Medium").load()
    with pytest.raises(AutodlError, match="plugin NOT_A_PLUGIN is neither a build function"):
        registry.instantiate(registry.find(f"{path}:NOT_A_PLUGIN"), (3, 3, 1), 4)


@pytest.mark.parametrize("spec", ["missing.py", "missing.py:Net", "sub/missing.py"])
def test_missing_plugin_file(tmp_path, spec):
    path = tmp_path / spec
    with pytest.raises(AutodlError, match="plugin file not found: .*missing.py$"):
        registry.find(str(path))


def test_file_without_a_plugin(tmp_path):
    path = write(tmp_path, "empty.py", "import keras_tuner\nVALUE = 1\nbuild = 'not callable'\n")
    with pytest.raises(AutodlError) as error:
        registry.find(str(path)).load()
    assert str(error.value) == (
        f"{path} has no build(hp) function or keras_tuner.HyperModel subclass"
    )


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("import keras\nraise RuntimeError('broken on purpose')\n", "RuntimeError: broken on"),
        ("def build(hp):\n    return (\n", "SyntaxError"),
        ("import not_a_module_anywhere\n", "ModuleNotFoundError"),
    ],
)
def test_file_that_fails_to_import(tmp_path, code, kind):
    path = write(tmp_path, "broken.py", code)
    plugin = registry.find(str(path))
    with pytest.raises(AutodlError) as error:
        plugin.load()
    assert str(error.value).startswith(f"{path} failed to import: {kind}")
    # fixed on disk, it loads: the failed module was not kept
    write(tmp_path, "broken.py", BUILD_FUNCTION)
    assert registry.find(str(path)).load().__name__ == "build"


# --- options and constructors -------------------------------------------------------------------


def test_an_option_the_plugin_does_not_take_is_refused(tmp_path):
    with pytest.raises(AutodlError, match="^--weights does not apply to arch mlp$"):
        registry.instantiate(registry.find("mlp"), (8, 8, 1), 3, weights="imagenet")
    function = registry.find(str(write(tmp_path, "f.py", BUILD_WITH_FACTS)))
    with pytest.raises(AutodlError, match="--weights does not apply to arch f"):
        registry.instantiate(function, (8, 8, 1), 3, weights="none")
    # None means "not given"
    assert registry.instantiate(registry.find("mlp"), (8, 8, 1), 3, weights=None).num_classes == 3


def test_an_option_the_plugin_takes_is_passed():
    hypermodel = registry.instantiate(registry.find("mobilenetv2"), (32, 32, 3), 4, weights="none")
    assert hypermodel.weights is None and hypermodel.num_classes == 4


def test_a_constructor_refusing_the_task_is_a_user_error():
    with pytest.raises(AutodlError, match=r"arch cnn: cnn needs images .* got \(64,\)"):
        registry.instantiate(registry.find("cnn"), (64,), 3)


# --- third-party packages: entry points ---------------------------------------------------------


NET_MODULE = '''
"""Acme's plugins."""
import keras
import keras_tuner


class TinyNet(keras_tuner.HyperModel):
    """Acme's tiny net."""

    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.input_shape, self.num_classes = input_shape, num_classes

    def build(self, hp):
        inputs = keras.Input(self.input_shape)
        x = keras.layers.Flatten()(inputs)
        x = keras.layers.Dense(hp.Choice("width", [8, 16]))(x)
        return keras.Model(inputs, keras.layers.Dense(self.num_classes)(x))
'''


@pytest.fixture
def installed_package(tmp_path, monkeypatch):
    """Install a fake distribution ``acme-plugins`` on ``sys.path``; returns a function
    that writes its ``entry_points.txt`` from ``{name: "module:attr"}``."""
    site = tmp_path / "site"
    info = site / "acme_plugins-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-plugins\nVersion: 1.0\n")
    write(site, "acme_nets.py", NET_MODULE)
    write(site, "acme_broken.py", "raise ImportError('acme is broken')\n")

    def install(plugins: dict[str, str]) -> None:
        lines = [f"{name} = {value}" for name, value in plugins.items()]
        (info / "entry_points.txt").write_text("[autodl.plugins]\n" + "\n".join(lines) + "\n")
        monkeypatch.syspath_prepend(str(site))

    yield install
    for module in ("acme_nets", "acme_broken"):
        sys.modules.pop(module, None)


def test_a_package_plugin_is_discovered(installed_package):
    installed_package({"tinynet": "acme_nets:TinyNet"})
    plugin = registry.find("tinynet")
    assert (plugin.name, plugin.source) == ("tinynet", "package acme-plugins")
    assert plugin.description() == "Acme's tiny net."
    names = [p.name for p in registry.available()]
    assert names.index("tinynet") > max(names.index(n) for n in BUILT_INS)
    assert names.index("tinynet") < names.index("kt:HyperResNet")
    model, hp = dry(registry.instantiate(plugin, (8, 8, 1), 3))
    assert model.output_shape == (None, 3) and hp.values == {"width": 8}


def test_a_package_plugin_that_fails_to_import(installed_package):
    installed_package({"acme": "acme_broken:Net"})
    plugin = registry.find("acme")
    with pytest.raises(AutodlError, match=r"plugin 'acme' \(acme_broken:Net\) failed to import: "
                                          "acme is broken"):
        plugin.load()


def test_two_plugins_with_one_name_are_refused(installed_package):
    installed_package({"mlp": "acme_nets:TinyNet"})
    for name in ("mlp", "cnn"):
        with pytest.raises(AutodlError) as error:
            registry.find(name)
        message = str(error.value)
        assert message.startswith("two plugins are named 'mlp': ")
        assert "built-in (autodl.plugins.mlp:MLP)" in message
        assert "package acme-plugins (acme_nets:TinyNet)" in message


def test_entry_points_without_a_distribution(monkeypatch):
    real = registry.entry_points

    def fake(group):
        extra = EntryPoint("loose", "acme_loose:Net", group)
        return [*real(group=group), extra]

    monkeypatch.setattr(registry, "entry_points", fake)
    assert registry.find("loose").source == "package unknown"
    assert registry.find("mlp").source == "built-in"


def test_the_same_entry_point_seen_twice_is_one_plugin(monkeypatch):
    real = registry.entry_points
    monkeypatch.setattr(registry, "entry_points", lambda group: [*real(group=group)] * 2)
    assert [p.name for p in registry.available()][:3] == sorted(BUILT_INS)
    assert registry.find("mlp").source == "built-in"


def test_entry_points_with_one_name_and_two_targets(monkeypatch):
    def fake(group):
        return [EntryPoint("net", "acme_a:Net", group), EntryPoint("net", "acme_b:Net", group)]

    monkeypatch.setattr(registry, "entry_points", fake)
    with pytest.raises(AutodlError, match=r"two plugins are named 'net': package unknown "
                                          r"\(acme_a:Net\) and package unknown \(acme_b:Net\)"):
        registry.available()


# --- end to end through the command line ----------------------------------------------------------


MODES = '''
"""A plugin that breaks on purpose for some values of `mode`."""
import keras


def build(hp, input_shape, num_classes):
    mode = hp.Choice("mode", ["ok", "raise", "not_a_model"])
    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(hp.Int("units", 4, 8), activation="relu")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    if mode == "raise":
        raise ValueError("mode 'raise' cannot build")
    if mode == "not_a_model":
        return {"outputs": outputs}
    return keras.Model(inputs, outputs)
'''

STORAGE = "sqlite:///studies/autodl.db"


def tune(plugin: Path, dataset: Path, trials: int, *extra: str) -> int:
    return main(["tune", "--arch", str(plugin), "--dataset", f"npz:{dataset}", "--trials",
                 str(trials), "--epochs", "1", "--pruner", "none", "--seed", "0", *extra])


def test_tune_a_plugin_file_end_to_end(in_tmp, tiny_npz, capsys):
    plugin = write(in_tmp, "net.py", BUILD_WITH_FACTS)
    assert tune(plugin, tiny_npz, 2) == 0
    assert "2 of 2 trials finished" in capsys.readouterr().out
    assert optuna.get_all_study_names(STORAGE) == ["net-npz"]
    trials = optuna.load_study(study_name="net-npz", storage=STORAGE).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    for trial in trials:
        assert 4 <= trial.params["units"] <= 16
        assert trial.user_attrs["hyperparameters"]["units"] == trial.params["units"]
        assert 0.0 <= trial.value <= 1.0


def test_failing_builds_fail_their_trials_and_the_study_goes_on(in_tmp, tiny_npz, capsys):
    plugin = write(in_tmp, "modes.py", MODES)
    # The defaults build: a first run creates the study.
    assert tune(plugin, tiny_npz, 1, "--set", "mode=ok") == 0
    study = optuna.load_study(study_name="modes-npz", storage=STORAGE)
    for mode in ("raise", "not_a_model", "ok"):
        study.enqueue_trial({"mode": mode})
    capsys.readouterr()

    assert tune(plugin, tiny_npz, 2) == 0
    out = capsys.readouterr().out
    trials = optuna.load_study(study_name="modes-npz", storage=STORAGE).get_trials()
    assert [(t.state, t.params.get("mode")) for t in trials] == [
        (TrialState.COMPLETE, None),  # fixed by --set: not a suggestion
        (TrialState.FAIL, "raise"),
        (TrialState.FAIL, "not_a_model"),
        (TrialState.COMPLETE, "ok"),
    ]
    assert trials[1].user_attrs["fail_reason"] == "ValueError: mode 'raise' cannot build"
    assert trials[1].user_attrs["fail_kind"] == "ValueError"
    assert trials[2].user_attrs["fail_reason"] == (
        "TypeError: build(hp) returned dict, not a keras.Model"
    )
    assert "ValueError: mode 'raise' cannot build" in out
    assert "returned dict, not a keras.Model" in out
    assert "2 of 2 trials finished: 2 complete, 0 pruned (2 failed)" in out


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("raise", "ValueError: mode 'raise' cannot build"),
        ("not_a_model", "TypeError: build(hp) returned dict, not a keras.Model"),
    ],
)
def test_a_plugin_that_cannot_build_at_its_defaults_is_refused(in_tmp, tiny_npz, capsys,
                                                               mode, reason):
    plugin = write(in_tmp, "modes.py", MODES)
    assert tune(plugin, tiny_npz, 1, "--set", f"mode={mode}") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"autodl: error: arch {plugin} cannot build a model for input "
                          f"(8, 8, 1): {reason}")
    assert not (in_tmp / "studies" / "autodl.db").exists()  # nothing written


def test_tune_refuses_a_missing_plugin_file(in_tmp, tiny_npz, capsys):
    assert tune(in_tmp / "nope.py", tiny_npz, 1) == 2
    assert "autodl: error: plugin file not found:" in capsys.readouterr().err
