"""`autodl export`: every format round-trips the tiny study's best model; bad input is refused."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
from conftest import make_images
from test_cli import assert_refused

from autodl.cli import main
from autodl.storage import most_accurate_trial, pareto_front

FORMATS = ("keras", "savedmodel", "tflite", "onnx")


@contextlib.contextmanager
def inside(folder: Path):
    """The tiny study's dataset path (npz:tiny.npz) is relative to its folder."""
    cwd = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(cwd)


def export(tiny_study, out: Path, *options: str) -> int:
    folder, storage, name = tiny_study
    with inside(folder):
        return main(["export", name, "--out", str(out), "--storage", storage, *options])


def leftovers(folder: Path) -> list[str]:
    """Hidden staging folders an export may have left beside its destination."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def exports(tiny_study, tmp_path_factory):
    """One export per format, made on first use and shared by the module's tests."""
    folder = tmp_path_factory.mktemp("exports")
    made: dict[str, Path] = {}

    def get(format: str) -> Path:
        if format not in made:
            assert export(tiny_study, folder / format, "--format", format) == 0
            made[format] = folder / format
        return made[format]

    return get


@pytest.fixture(scope="module")
def reference(tiny_study):
    """The tiny study, its test split and its stored best model's predictions on it."""
    import keras

    from autodl.storage import study_splits

    folder, storage, name = tiny_study
    study = optuna.load_study(study_name=name, storage=storage)
    with inside(folder):
        splits = study_splits(study)
    model = keras.models.load_model(folder / "studies" / "models" / f"{name}.keras")
    return study, splits, model.predict(splits.x_test, verbose=0)


def run_with_runtime(format: str, path: Path, x: np.ndarray) -> np.ndarray:
    """Predictions of an exported file, run by its format's own runtime (not autodl's code)."""
    if format == "keras":
        import keras

        return keras.models.load_model(path).predict(x, verbose=0)
    if format == "savedmodel":
        import tensorflow as tf

        loaded = tf.saved_model.load(str(path))  # kept: serve needs its variables alive
        return loaded.serve(tf.constant(x)).numpy()
    if format == "tflite":
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(path))
        source = interpreter.get_input_details()[0]["index"]
        interpreter.resize_tensor_input(source, x.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(source, x)
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("format", FORMATS)
def test_round_trip_matches_stored_model(format, exports, reference, capsys):
    from autodl.export import FORMATS as DEFINED

    study, splits, expected = reference
    folder = exports(format)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["format"] == format
    assert sorted(p.name for p in folder.iterdir()) == sorted(["manifest.json",
                                                               manifest["model"]])
    got = run_with_runtime(format, folder / manifest["model"], splits.x_test)
    tolerance = DEFINED[format].tolerance
    assert got.shape == expected.shape
    assert np.max(np.abs(got - expected)) <= tolerance
    check = manifest["verification"]
    assert check["tolerance"] == tolerance and check["max_abs_difference"] <= tolerance
    assert check["examples"] == len(splits.y_test) and check["same_class"] == 1.0
    assert manifest["test_accuracy"] == pytest.approx(study.user_attrs["test"]["accuracy"])
    # autodl predict runs every format: the same probabilities for the test split's arrays.
    arrays = folder.parent / f"{format}-x.npz"
    np.savez(arrays, x=splits.x_test)
    capsys.readouterr()
    assert main(["predict", str(folder), str(arrays)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == [f"{arrays}[{i}]"
                                                      for i in range(len(expected))]
    assert [line.split("\t")[1] for line in lines] == [
        study.user_attrs["autodl"]["class_names"][c] for c in expected.argmax(-1)
    ]
    probabilities = [float(line.split("\t")[2]) for line in lines]
    np.testing.assert_allclose(probabilities, expected.max(-1), atol=1e-4)
    one = folder.parent / f"{format}-one.npy"  # a single example: a batch of one
    np.save(one, splits.x_test[-1])
    assert main(["predict", str(folder), str(one)]) == 0
    assert capsys.readouterr().out.splitlines() == [lines[-1].replace(str(arrays), str(one))
                                                    .replace(f"[{len(lines) - 1}]", "[0]")]


def test_manifest_describes_model_and_preprocessing(exports, reference):
    import keras
    import tensorflow as tf

    import autodl

    study, splits, _ = reference
    manifest = json.loads((exports("keras") / "manifest.json").read_text())
    best = most_accurate_trial(study)
    assert manifest["study"] == "tiny" and manifest["trial"] == best.number
    assert manifest["arch"] == "mlp" and manifest["dataset"] == "npz:tiny.npz"
    assert manifest["hyperparameters"] == best.user_attrs["hyperparameters"]
    assert manifest["validation_accuracy"] == best.value
    assert manifest["test_examples"] == len(splits.y_test)
    assert manifest["retrained"] is None
    assert manifest["input"] == {"shape": [8, 8, 1], "dtype": "float32"}
    assert manifest["class_names"] == ["0", "1", "2"]
    prep = manifest["preprocessing"]
    assert prep["kind"] == "image"
    assert (prep["height"], prep["width"], prep["channels"]) == (8, 8, 1)
    assert prep["color_mode"] == "L" and prep["value_range"] == [0.0, 1.0]
    assert prep["pixel_scale"] == pytest.approx(1 / 255) and prep["pixel_offset"] == 0.0
    assert prep["array_scale"] == 1.0  # the npz held floats, used as they are
    versions = manifest["versions"]
    assert versions["autodl"] == autodl.__version__
    assert versions["keras"] == keras.__version__ and versions["tensorflow"] == tf.__version__


def test_onnx_manifest_names_converter_versions(exports):
    versions = json.loads((exports("onnx") / "manifest.json").read_text())["versions"]
    assert {"tf2onnx", "onnx", "onnxruntime"} <= set(versions)
    assert "unknown" not in versions.values()


def test_existing_output_is_refused_then_replaced_with_force(exports, tiny_study, tmp_path,
                                                             capsys):
    out = tmp_path / "out"
    shutil.copytree(exports("keras"), out)
    (out / "marker").write_text("an earlier export")
    assert export(tiny_study, out) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert (out / "marker").is_file()
    assert export(tiny_study, out, "--force") == 0
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.keras"]
    assert leftovers(tmp_path) == []


def test_force_never_replaces_what_is_not_an_export(tiny_study, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert export(tiny_study, out, "--force") == 2
    assert "is not an autodl export" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "keep me"
    mine = tmp_path / "mine.keras"  # a model file autodl did not write: no manifest beside it
    mine.write_text("my own model")
    assert export(tiny_study, mine, "--force") == 2
    assert "mine.keras exists and is not an autodl export" in capsys.readouterr().err
    assert mine.read_text() == "my own model"


@pytest.mark.parametrize("format", ["keras", "onnx"])
def test_out_ending_in_the_format_suffix_is_the_model_file(format, tiny_study, reference,
                                                           tmp_path, capsys):
    """`--out best.keras` writes that file and best.keras.manifest.json beside it."""
    study, splits, expected = reference
    out = tmp_path / f"best.{format}"
    assert export(tiny_study, out) == 0  # the format follows the suffix
    beside = tmp_path / f"best.{format}.manifest.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name, beside.name]
    assert out.is_file()
    manifest = json.loads(beside.read_text())
    assert (manifest["format"], manifest["model"]) == (format, out.name)
    assert f"Manifest: {beside}" in capsys.readouterr().out
    got = run_with_runtime(format, out, splits.x_test)
    assert np.max(np.abs(got - expected)) <= manifest["verification"]["tolerance"]
    # autodl predict takes the file itself.
    arrays = tmp_path.parent / f"{tmp_path.name}-x.npz"
    np.savez(arrays, x=splits.x_test)
    assert main(["predict", str(out), str(arrays)]) == 0
    classes = [line.split("\t")[1] for line in capsys.readouterr().out.splitlines()]
    assert classes == [study.user_attrs["autodl"]["class_names"][c] for c in expected.argmax(-1)]
    # Replaced only with --force, and never half: the same two files, nothing else.
    assert export(tiny_study, out) == 2
    assert f"{out} exists; pass --force" in capsys.readouterr().err
    assert export(tiny_study, out, "--force") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name, beside.name]


def test_retrain_trains_best_configuration_for_best_epoch(tiny_study, reference, tmp_path):
    import keras

    study, splits, _ = reference
    best = most_accurate_trial(study)
    out = tmp_path / "retrained"
    assert export(tiny_study, out, "--retrain") == 0
    manifest = json.loads((out / "manifest.json").read_text())
    retrained = manifest["retrained"]
    assert retrained["epochs"] == best.user_attrs["best_epoch"]
    assert [h["epoch"] for h in retrained["history"]] == list(range(1, retrained["epochs"] + 1))
    assert retrained["examples"] == len(splits.y_train) + len(splits.y_val)
    assert manifest["hyperparameters"] == best.user_attrs["hyperparameters"]
    model = keras.models.load_model(out / "model.keras")
    stored = keras.models.load_model(tiny_study[0] / "studies" / "models" / "tiny.keras")
    assert model.count_params() == stored.count_params()  # the same architecture...
    assert [w.shape for w in model.get_weights()] == [w.shape for w in stored.get_weights()]
    assert any(not np.allclose(a, b) for a, b in zip(model.get_weights(),
                                                     stored.get_weights(), strict=True))


def test_retrain_follows_the_trials_seed_and_dtype_policy(in_tmp, tiny_npz):
    """Retraining prepares its model with the trial's own function: seeded as the trial was
    (so twice is the same model), under the study's mixed precision."""
    import keras
    from conftest import tune_args

    from autodl.export import retrain
    from autodl.storage import study_splits

    assert main(tune_args(f"npz:{tiny_npz}", "--study", "mixed", "--pruner", "none",
                          "--mixed-precision", trials=1)) == 0
    study = optuna.load_study(study_name="mixed", storage="sqlite:///studies/autodl.db")
    splits = study_splits(study)
    try:
        first, second = (retrain(study, study.best_trial, splits) for _ in range(2))
    finally:
        keras.config.set_dtype_policy("float32")
    assert keras.config.dtype_policy().name == "float32"  # left as it was found
    assert first.seed == second.seed == 1 + study.best_trial.number  # --seed 1, as the trial
    assert first.model.layers[-2].compute_dtype == "float16"
    assert keras.backend.standardize_dtype(first.model.output.dtype) == "float32"
    for a, b in zip(first.model.get_weights(), second.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.fixture
def empty_study(tmp_path_factory) -> str:
    """A storage holding a study whose only trial failed."""
    url = f"sqlite:///{tmp_path_factory.mktemp('empty')}/empty.db"
    study = optuna.create_study(study_name="empty", storage=url)
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    return url


BAD = {
    "unknown study": (["nope"], "no study 'nope' in"),
    "unknown format": (["tiny", "--format", "pt"], "unknown format 'pt'; choose from keras"),
    "another format's suffix": (["tiny", "--out", "{tmp}/m.onnx", "--format", "keras"],
                                "m.onnx ends in .onnx, the suffix of the onnx format, not "
                                "keras's; give --format onnx, or another --out"),
    "no completed trial": (["empty"], "study 'empty' has no completed trial"),
    "missing folder": (["tiny", "--out", "{tmp}/no/such/out"], "folder does not exist"),
    "existing output": (["tiny", "--out", "{tmp}/taken"], "taken exists; pass --force"),
    "missing storage": (["tiny", "--storage", "sqlite:///{tmp}/none.db"], "no study storage"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_one_line_exit_2_nothing_written(case, tiny_study, empty_study, tmp_path,
                                                   capsys):
    folder, storage, _ = tiny_study
    args, message = BAD[case]
    args = [a.format(tmp=tmp_path) for a in args]
    (tmp_path / "taken").mkdir()
    if "--out" not in args:
        args += ["--out", str(tmp_path / "out")]
    if "--storage" not in args:
        args += ["--storage", empty_study if args[0] == "empty" else storage]
    before = sorted(tmp_path.iterdir())
    with inside(folder):
        assert main(["export", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("autodl: error: ") and err.count("\n") == 1, err
    assert message in err
    assert sorted(tmp_path.iterdir()) == before


@pytest.mark.parametrize(("format", "module"), [("onnx", "onnxruntime"), ("onnx", "tf2onnx"),
                                                ("tflite", "ai_edge_litert")])
def test_missing_converter_or_runtime_names_the_extra(format, module, tiny_study, tmp_path,
                                                      monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    assert export(tiny_study, tmp_path / "out", "--format", format) == 2
    err = capsys.readouterr().err
    assert err == (f"autodl: error: the {format} format needs the '{module}' package: "
                   f"pip install 'autodl[{format}]'\n")
    assert list(tmp_path.iterdir()) == []


def test_error_is_one_line_on_the_real_stderr(tiny_study, tmp_path):
    """Run as a user does: TensorFlow's own start-up lines must not reach the terminal."""
    folder, storage, _ = tiny_study
    env = {**os.environ}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    result = subprocess.run(
        [sys.executable, "-m", "autodl", "export", "tiny", "--out", str(tmp_path / "out"),
         "--storage", storage, "--format", "onnx"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    # Run outside the study's folder, the relative dataset path cannot be found.
    assert result.returncode == 2
    assert result.stderr.startswith("autodl: error: cannot rebuild the data of study 'tiny'")
    assert result.stderr.count("\n") == 1, result.stderr
    assert list(tmp_path.iterdir()) == []


def test_onnx_converts_exact_gelu(tmp_path):
    """tf2onnx has no Erfc, which TensorFlow's exact gelu uses; export teaches it."""
    import keras

    from autodl.export import FORMATS as DEFINED

    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(16, activation="gelu")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    x, _ = make_images(10)
    expected = model.predict(x, verbose=0)  # a model is exported once it has been called
    onnx = DEFINED["onnx"]
    onnx.write(model, tmp_path / "gelu.onnx")
    got = onnx.load(tmp_path / "gelu.onnx")(x)
    assert np.max(np.abs(got - expected)) <= onnx.tolerance


def test_preprocessing_follows_the_dataset():
    from autodl.datasets import Splits
    from autodl.export import describe_preprocessing

    def splits(x: np.ndarray) -> Splits:
        y = np.zeros(len(x), dtype="int64")
        return Splits(x, y, x, y, x, y, ["a"])

    digits = describe_preprocessing({"dataset": "digits", "image_size": 96},
                                    splits(np.linspace(0, 1, 128).reshape(2, 8, 8, 1)))
    assert digits["array_scale"] == 1 / 16 and digits["color_mode"] == "L"
    assert "0..16" in digits["source"]
    photos = describe_preprocessing({"dataset": "images:photos", "image_size": 32},
                                    splits(np.zeros((2, 32, 32, 3))))
    assert (photos["kind"], photos["color_mode"], photos["height"]) == ("image", "RGB", 32)
    wide = describe_preprocessing({"dataset": "npz:x.npz", "image_size": 96},
                                  splits(np.full((2, 4, 4, 1), 200.0)))
    assert wide["value_range"] == [0.0, 255.0] and wide["pixel_scale"] == 1.0
    table = describe_preprocessing({"dataset": "npz:t.npz", "image_size": 96},
                                   splits(np.linspace(-3, 3, 40).reshape(2, 20)))
    assert table["kind"] == "array" and table["value_range"] == [-3.0, 3.0]


@pytest.mark.parametrize("format", FORMATS)
def test_augmented_model_exports_without_augmenting(format, tmp_path):
    """Every format runs the model in inference mode: its random augmentation passes through."""
    import keras

    from autodl import registry
    from autodl.config import Fixed, Space
    from autodl.export import FORMATS as DEFINED
    from autodl.hyperparameters import OptunaHyperParameters

    cnn = registry.instantiate(registry.find("cnn"), (8, 8, 1), 3)
    hp = OptunaHyperParameters(Space({"augment": Fixed(True), "flip": Fixed("horizontal")}))
    model = cnn.build(hp)
    assert len(model.get_layer("augmentation").layers) == 5  # flip and the four factors
    x, _ = make_images(10)
    expected = model.predict(x, verbose=0)
    written = DEFINED[format]
    written.write(model, tmp_path / written.filename)
    got = written.load(tmp_path / written.filename)(x)
    assert np.max(np.abs(got - expected)) <= written.tolerance
    keras.backend.clear_session()


def _front(front_study) -> tuple[str, str, optuna.Study, list[optuna.trial.FrozenTrial]]:
    """The multi-objective study and its Pareto front, most accurate first."""
    storage, name = front_study
    study = optuna.load_study(study_name=name, storage=storage)
    return storage, name, study, pareto_front(study)


def test_multi_objective_study_exports_the_front_trial_asked_for(front_study, tmp_path,
                                                                 capsys):
    import keras

    storage, name, study, front = _front(front_study)
    chosen = front[-1]  # the cheapest, not the most accurate
    out = tmp_path / "cheap.keras"
    assert main(["export", name, "--storage", storage, "--out", str(out), "--trial",
                 str(chosen.number)]) == 0
    assert capsys.readouterr().out.startswith(f"Exported trial #{chosen.number} of {name} "
                                              "(its stored model) as keras: ")
    manifest = json.loads((tmp_path / "cheap.keras.manifest.json").read_text())
    assert manifest["trial"] == chosen.number
    assert manifest["objectives"] == ["accuracy", "latency"]
    assert manifest["validation_accuracy"] == chosen.values[0]
    attrs = chosen.user_attrs
    assert manifest["deployment"] == {
        key: attrs[key] for key in ("params_count", "size_bytes", "latency_ms",
                                    "latency_runtime")}
    assert keras.models.load_model(out).count_params() == attrs["params_count"]
    assert attrs["params_count"] != front[0].user_attrs["params_count"]  # another model


def test_retrain_exports_the_trial_asked_for(front_study, tmp_path):
    import keras

    storage, name, _, front = _front(front_study)
    chosen = front[-1]
    out = tmp_path / "retrained"
    assert main(["export", name, "--storage", storage, "--out", str(out), "--trial",
                 str(chosen.number), "--retrain"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["trial"] == chosen.number
    assert manifest["retrained"]["epochs"] == chosen.user_attrs["best_epoch"]
    assert manifest["hyperparameters"] == chosen.user_attrs["hyperparameters"]
    model = keras.models.load_model(out / "model.keras")
    assert model.count_params() == chosen.user_attrs["params_count"]


def _trial_refusals(front_study, tiny_study) -> dict[str, tuple[list[str], str]]:
    storage, name, study, front = _front(front_study)
    numbers = ", ".join(str(t.number) for t in front)
    kept = ", ".join(str(t.number) for t in study.trials if "model_artifact_id" in t.user_attrs)
    complete = optuna.trial.TrialState.COMPLETE
    dominated = next(t.number for t in study.trials
                     if t.state == complete and "model_artifact_id" not in t.user_attrs)
    pruned = study.trials[-1].number
    tiny = optuna.load_study(study_name=tiny_study[2], storage=tiny_study[1])
    not_best = next(t.number for t in tiny.trials if "model_artifact_id" not in t.user_attrs)
    at = ["--storage", storage]
    return {
        "no --trial": ([name, *at], f"study 'front' tunes several objectives: choose a trial "
                       f"of its Pareto front with --trial N (front: {numbers})"),
        "no such trial": ([name, *at, "--trial", "99"],
                          f"study 'front' has no trial #99 (its trials: #0 to #{pruned})"),
        "dominated": ([name, *at, "--trial", str(dominated)],
                      f"trial #{dominated} of study 'front' has no stored model (it was not on "
                      f"the Pareto front when it completed); trials with one: {kept}"),
        "pruned": ([name, *at, "--trial", str(pruned), "--retrain"],
                   f"trial #{pruned} of study 'front' has no stored model (it is PRUNED)"),
        "not the best": (["tiny", "--storage", tiny_study[1], "--trial", str(not_best)],
                         f"trial #{not_best} of study 'tiny' has no stored model (it was not "
                         "the best when it completed)"),
        "not a number": ([name, *at, "--trial", "best"], "argument --trial: invalid int value"),
    }


@pytest.mark.parametrize("case", ["no --trial", "no such trial", "dominated", "pruned",
                                  "not the best", "not a number"])
def test_trial_without_a_model_is_refused(case, front_study, tiny_study, tmp_path, capsys):
    args, message = _trial_refusals(front_study, tiny_study)[case]
    with inside(tiny_study[0]):
        assert_refused(["export", *args, "--out", str(tmp_path / "out")], message, capsys)
    assert list(tmp_path.iterdir()) == []
