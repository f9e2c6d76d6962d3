"""Export a study's model for serving: Keras, TensorFlow SavedModel, TFLite or ONNX.

The model is the study's best trial's, or any trial's that kept one (``--trial N``): a
study of several objectives has no best trial, so a trial of its Pareto front is chosen.

An export is a folder holding the model file(s) and ``manifest.json``, or a model file
written on its own with its manifest beside it (``model.onnx`` and
``model.onnx.manifest.json``): see :func:`export_study`. The manifest says what
the model is (study, trial, hyperparameters, accuracies, the study's objectives and the
trial's deployment costs), what it takes (input shape, dtype, and how to turn an image
or an array into an input: see :func:`describe_preprocessing`), its class names, and
the library versions. Before the export appears, the written model is loaded back with
its format's own runtime and its predictions on the study's test split are compared
with the stored model's; a difference above the format's tolerance is an error. The
export is written in a temporary folder beside its destination and renamed at the end,
so a failed export leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import logging
import os
import shutil
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keras
import numpy as np
import optuna

from autodl import __version__, registry, storage
from autodl._imports import native_stderr_hidden, try_import
from autodl.config import DEFAULT_STORAGE, Fixed, Space
from autodl.datasets import Splits
from autodl.deployment import litert_runner, write_tflite
from autodl.errors import AutodlError, choose
from autodl.hyperparameters import OptunaHyperParameters
from autodl.objectives import ACCURACY
from autodl.plugin import overrides_fit
from autodl.storage import TrialAttr
from autodl.trial import dtype_policy, encode_labels, prepare_model, trial_seed

MANIFEST = "manifest.json"
#: Added to a model file's name for the manifest beside it: ``model.keras.manifest.json``.
MANIFEST_SUFFIX = ".manifest.json"
#: Examples per call of a runtime, so large test splits and inputs stay in memory.
BATCH = 256
#: The PIL mode images are converted to, by the channel count of the model's input.
COLOR_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
#: The facts a study must have recorded to be exported.
_NEEDED_FACTS = ("arch", "dataset", "image_size", "val_split", "test_split", "max_samples",
                 "split_seed", "input_shape", "class_names")

Predictor = Callable[[np.ndarray], np.ndarray]


def _batched(run: Callable[[np.ndarray], Any]) -> Predictor:
    """A predictor that feeds ``run`` at most ``BATCH`` examples at a time."""

    def predict(x: np.ndarray) -> np.ndarray:
        parts = [np.asarray(run(x[i:i + BATCH])) for i in range(0, len(x), BATCH)]
        return np.concatenate(parts).astype("float32")

    return predict


def _write_keras(model: keras.Model, path: Path) -> None:
    model.save(path)


def _load_keras(path: Path) -> Predictor:
    model = keras.models.load_model(path, safe_mode=True)  # never runs code from the file
    return _batched(model.predict_on_batch)


def _write_saved_model(model: keras.Model, path: Path) -> None:
    model.export(path, format="tf_saved_model", verbose=False)


def _load_saved_model(path: Path) -> Predictor:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    return _batched(lambda x: loaded.serve(tf.constant(x)).numpy())


def _load_tflite(path: Path) -> Predictor:
    return _batched(litert_runner(path))


@functools.cache
def _teach_tf2onnx_erfc() -> None:
    """Give tf2onnx a converter for ``Erfc``, which it lacks: erfc(x) = 1 - erf(x).

    TensorFlow computes Keras's exact ``gelu`` as ``0.5 * x * erfc(-x / sqrt(2))``;
    without this, tf2onnx writes a model that onnxruntime refuses.
    """
    import tf2onnx.onnx_opset  # noqa: F401  (registers tf2onnx's own converters)
    from tf2onnx import constants, handler, utils

    opsets = handler.tf_op.get_opsets().get(constants.ONNX_DOMAIN, [])
    if any("Erfc" in ops for ops in opsets):  # a tf2onnx that knows it already
        return

    @handler.tf_op("Erfc")
    class _Erfc:
        @classmethod
        def version_9(cls, ctx: Any, node: Any, **kwargs: Any) -> None:
            erf = ctx.make_node("Erf", [node.input[0]], op_name_scope=node.name, name="erf")
            one = ctx.make_const(utils.make_name("one"), np.array(1, dtype=np.float32))
            shapes, dtypes = node.output_shapes, node.output_dtypes
            ctx.remove_node(node.name)
            ctx.make_node("Sub", [one.output[0], erf.output[0]], outputs=[node.output[0]],
                          name=node.name, shapes=shapes, dtypes=dtypes)


class _Collect(logging.Handler):
    """Keeps the error records of a library's logger, to report them in one line."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _write_onnx(model: keras.Model, path: Path) -> None:
    _teach_tf2onnx_erfc()
    logger = logging.getLogger("tf2onnx")
    collect, propagate = _Collect(), logger.propagate
    logger.addHandler(collect)
    logger.propagate = False
    try:
        with warnings.catch_warnings():  # Keras's NumPy 2 patch of tf2onnx warns
            warnings.simplefilter("ignore")
            model.export(path, format="onnx", verbose=False)
    finally:
        logger.removeHandler(collect)
        logger.propagate = propagate
    if collect.messages:  # tf2onnx logs what it cannot convert and writes the file anyway
        raise AutodlError(f"tf2onnx cannot convert this model to ONNX: {collect.messages[-1]}")


def _load_onnx(path: Path) -> Predictor:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return _batched(lambda x: session.run(None, {name: x})[0])


@dataclass(frozen=True)
class ModelFormat:
    """One export format: how to write a model in it and how to run the written file.

    Attributes:
        name: What ``--format`` calls it.
        filename: The model file (or folder) inside the export folder.
        tolerance: The largest difference allowed between a class probability of the
            written model, run by its runtime, and of the Keras model it was written from.
        runtime: The library that loads the written file back.
        write: Writes a Keras model to a path.
        load: Loads the written file with ``runtime`` and returns a predictor.
        extra: The autodl extra that installs the modules below.
        converter_modules: Modules needed to write this format.
        runtime_modules: Modules needed to run it.
    """

    name: str
    filename: str
    tolerance: float
    runtime: str
    write: Callable[[keras.Model, Path], None]
    load: Callable[[Path], Predictor]
    extra: str | None = None
    converter_modules: tuple[str, ...] = ()
    runtime_modules: tuple[str, ...] = ()

    @property
    def suffix(self) -> str:
        """The model file's suffix, e.g. ``.onnx``; empty for a format written as a folder."""
        return Path(self.filename).suffix

    def require(self, converter: bool = True) -> None:
        """Check the modules this format needs are installed.

        Args:
            converter: Also check the converter's, not only the runtime's.

        Raises:
            AutodlError: Naming the missing module and the extra that installs it.
        """
        modules = (self.converter_modules if converter else ()) + self.runtime_modules
        purpose = f"the {self.name} format"
        for module in modules:
            try_import(module, self.extra or "", purpose)

    def versions(self) -> dict[str, str]:
        """The versions of the libraries that write and run this format."""
        names = ["tensorflow", "keras", *self.converter_modules, *self.runtime_modules]
        return {name: _version(name) for name in dict.fromkeys(names)}


def _version(module: str) -> str:
    """An installed module's version (whichever distribution provides it)."""
    try:
        return str(importlib.import_module(module).__version__)
    except (ImportError, AttributeError):
        return "unknown"


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__


#: Every format ``autodl export --format`` writes. Tolerances are on class probabilities;
#: measured on the test suite's models the differences are 0 (Keras), 0 (SavedModel)
#: and about 1e-7 (TFLite, ONNX): float32 kernels that sum in another order.
FORMATS: dict[str, ModelFormat] = {
    "keras": ModelFormat("keras", "model.keras", 1e-6, "keras", _write_keras, _load_keras),
    "savedmodel": ModelFormat("savedmodel", "saved_model", 1e-5, "tensorflow",
                              _write_saved_model, _load_saved_model),
    "tflite": ModelFormat("tflite", "model.tflite", 1e-4, "ai_edge_litert", write_tflite,
                          _load_tflite, "tflite", runtime_modules=("ai_edge_litert",)),
    "onnx": ModelFormat("onnx", "model.onnx", 1e-4, "onnxruntime", _write_onnx, _load_onnx,
                        "onnx", ("tf2onnx", "onnx"), ("onnxruntime",)),
}


#: The format of ``--out`` names without a model suffix.
DEFAULT_FORMAT = "keras"


def manifest_beside(model_file: Path) -> Path:
    """The manifest of a model file exported on its own: ``model.keras.manifest.json``."""
    return model_file.with_name(model_file.name + MANIFEST_SUFFIX)


def _choose_format(name: str | None, out: Path) -> ModelFormat:
    """The format called ``name``; by default the one whose suffix ``out`` ends in.

    Raises:
        AutodlError: For an unknown name, or an ``out`` named like another format's file.
    """
    implied = next((f for f in FORMATS.values() if f.suffix and out.suffix == f.suffix), None)
    if name is None:
        return implied or FORMATS[DEFAULT_FORMAT]
    chosen = choose(FORMATS, name, "format")
    if implied is not None and implied is not chosen:
        raise AutodlError(f"--out {out.name} ends in {out.suffix}, the suffix of the "
                          f"{implied.name} format, not {chosen.name}'s; give --format "
                          f"{implied.name}, or another --out")
    return chosen


def _value_range(x: np.ndarray) -> tuple[float, float]:
    """The range the model's inputs live in: the usual one that holds the training data."""
    low, high = float(np.min(x)), float(np.max(x))
    for nominal_low, nominal_high in ((0.0, 1.0), (-1.0, 1.0), (0.0, 255.0)):
        if nominal_low <= low and high <= nominal_high:
            return nominal_low, nominal_high
    return low, high


def _source(facts: dict[str, Any]) -> str:
    """How the study's dataset turned its raw data into model inputs, for people."""
    kind = facts["dataset"].partition(":")[0]
    if kind == "digits":
        return "scikit-learn digits: 8x8 grayscale ink counts 0..16, divided by 16"
    if kind == "images":
        size = facts["image_size"]
        return f"image files: converted to RGB, resized to {size}x{size} (bilinear), /255"
    return f"{facts['dataset']}: 8-bit pixels divided by 255, other values as stored"


def describe_preprocessing(facts: dict[str, Any], splits: Splits) -> dict[str, Any]:
    """How to turn an image file or an array into the model's input, from the study's facts.

    Image files (8-bit pixels ``p``) become ``p * pixel_scale + pixel_offset``, which
    maps 0..255 onto the model's ``value_range``, after conversion to ``color_mode``
    and a bilinear resize to ``height`` x ``width``. Arrays of 8-bit integers are
    scaled the same way; other arrays are in the dataset's own units and are multiplied
    by ``array_scale`` (1/16 for the digits' ink counts, else 1: taken as they are).

    Args:
        facts: What the study recorded (``study.user_attrs["autodl"]``).
        splits: The study's data splits.

    Returns:
        The manifest's ``preprocessing`` table; its ``kind`` is ``image`` for inputs of
        shape (height, width, 1, 3 or 4 channels), else ``array`` (no image files).
    """
    shape = tuple(splits.input_shape)
    low, high = _value_range(splits.x_train)
    table: dict[str, Any] = {"kind": "array", "value_range": [low, high]}
    if len(shape) == 3 and shape[-1] in COLOR_MODES:
        table.update(kind="image", height=shape[0], width=shape[1], channels=shape[-1],
                     color_mode=COLOR_MODES[shape[-1]], resize="bilinear")
    table.update(
        pixel_scale=(high - low) / 255.0,
        pixel_offset=low,
        array_scale=1 / 16 if facts["dataset"] == "digits" else 1.0,
        source=_source(facts),
    )
    return table


@dataclass
class Retrained:
    """A model trained again on training + validation data."""

    model: keras.Model
    epochs: int
    examples: int
    seed: int
    history: list[dict[str, float]]


def retrain(study: optuna.Study, trial: optuna.trial.FrozenTrial, splits: Splits) -> Retrained:
    """Train the trial's configuration again, on training + validation data.

    The model is prepared by the trial runner's own function, with every hyperparameter
    fixed at the trial's value, the trial's seed and the study's dtype policy, and
    trained for the trial's best epoch count (no validation data is left to stop it
    earlier): by the hypermodel's own ``fit`` if it has one, as the trial was. Its
    learning rate follows the trial's: the same schedule over the study's epochs, or,
    where the trial reduced it on plateaus, the rate the trial recorded for each epoch.

    Args:
        study: The study the trial belongs to.
        trial: A completed trial.
        splits: The study's data splits.

    Returns:
        The trained model and how it was trained.
    """
    facts = storage.recorded_facts(study, _NEEDED_FACTS)
    epochs = trial.user_attrs.get(TrialAttr.BEST_EPOCH)
    if epochs is None:
        raise AutodlError(f"trial {trial.number} does not record its best epoch")
    hypermodel = registry.instantiate(
        registry.find(facts["arch"]), splits.input_shape, splits.num_classes,
        weights=facts.get("weights"),
    )
    values = storage.hyperparameters(trial)
    hp = OptunaHyperParameters(Space({name: Fixed(value) for name, value in values.items()}))
    # The study's seed, or 0 for an unseeded study: a retrained model is reproducible.
    seed = trial_seed(int(facts["split_seed"]), trial.number)
    x = np.concatenate([splits.x_train, splits.x_val])
    y = np.concatenate([splits.y_train, splits.y_val])
    policy = keras.config.dtype_policy()
    try:
        model, training = prepare_model(
            hypermodel, hp, dtype_policy(facts.get("mixed_precision", False)), seed, len(y),
            int(facts["epochs"]),
        )
        # Keras's fit returns its History, which it makes only when none is passed: this
        # one records every epoch whatever a hypermodel's own fit returns.
        history = keras.callbacks.History()
        callbacks: list[keras.callbacks.Callback] = [history]
        if training.get("lr_plateau"):  # the plateaus were seen on validation data, gone now
            rates = [record["learning_rate"] for record in trial.user_attrs[TrialAttr.HISTORY]]
            callbacks.append(
                keras.callbacks.LearningRateScheduler(lambda epoch, _: rates[epoch])
            )
        labels = encode_labels(model, y, splits.num_classes)
        if overrides_fit(hypermodel):
            hypermodel.fit(hp, model, x, labels, epochs=int(epochs), callbacks=callbacks,
                           verbose=0)
        else:
            model.fit(x, labels, batch_size=training["batch_size"], epochs=int(epochs),
                      verbose=0, callbacks=callbacks)
    finally:
        keras.config.set_dtype_policy(policy)  # as found: the export goes on making models
    records = [
        {"epoch": epoch + 1, **{name: float(values[epoch])
                                for name, values in history.history.items()}}
        for epoch in range(len(history.epoch))
    ]
    return Retrained(model, int(epochs), len(y), seed, records)


def _check_destination(out: Path, force: bool, as_file: bool) -> None:
    """Refuse an ``out`` that exists, unless ``force`` and it is an earlier export."""
    if not out.parent.is_dir():
        raise AutodlError(f"folder does not exist: {out.parent}")
    paths = (out, manifest_beside(out)) if as_file else (out,)
    taken = [path for path in paths if path.exists() or path.is_symlink()]
    if not taken:
        return
    if not force:
        raise AutodlError(f"{taken[0]} exists; pass --force to replace it")
    if as_file:  # a manifest beside it says autodl wrote it
        is_export = paths[1].is_file() and not out.is_dir() and not out.is_symlink()
    else:
        is_export = out.is_dir() and not out.is_symlink() and (
            (out / MANIFEST).is_file() or not any(out.iterdir()))
    if not is_export:
        raise AutodlError(f"{out} exists and is not an autodl export; not replacing it")


def _new_folder_beside(out: Path, kind: str) -> Path:
    """A new hidden folder next to ``out`` (with the user's usual permissions)."""
    folder = out.parent / f".{out.name}.{kind}-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    return folder


@contextlib.contextmanager
def _staging(out: Path, as_file: bool) -> Iterator[Path]:
    """A temporary folder beside ``out``, whose export takes its place if the block succeeds.

    A folder export is the folder, renamed to ``out``. A file export is the model file
    ``out.name`` and its manifest, moved beside ``out``: the manifest last, so that a
    manifest always has its whole model.
    """
    staging = _new_folder_beside(out, "partial")
    try:
        yield staging
        if as_file:
            for path in (out, manifest_beside(out)):
                os.replace(staging / path.name, path)
        elif out.exists():  # checked and allowed by _check_destination
            old = _new_folder_beside(out, "old")
            os.replace(out, old / out.name)
            os.replace(staging, out)
            shutil.rmtree(old)
        else:
            os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def verify(model_format: ModelFormat, path: Path, x: np.ndarray,
           expected: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Run the written model with its format's runtime and compare it with ``expected``.

    Returns:
        The written model's predictions for ``x``, and the comparison for the manifest.

    Raises:
        AutodlError: If the file cannot be run, or its predictions differ by more than
            the format's tolerance.
    """
    try:
        got = model_format.load(path)(x)
    except Exception as error:  # any runtime's refusal of a file it was given
        raise AutodlError(
            f"the exported {model_format.name} model cannot be run by "
            f"{model_format.runtime}: {_first_line(error)}"
        ) from None
    if got.shape != expected.shape:
        raise AutodlError(f"the exported {model_format.name} model gives outputs of shape "
                          f"{got.shape}, not {expected.shape}")
    difference = float(np.max(np.abs(got - expected)))
    if not difference <= model_format.tolerance:  # also catches NaN
        raise AutodlError(
            f"the exported {model_format.name} model's predictions differ from the stored "
            f"model's by up to {difference:.3g} (tolerance {model_format.tolerance:g})"
        )
    return got, {
        "runtime": f"{model_format.runtime} {_version(model_format.runtime)}",
        "examples": len(x),
        "max_abs_difference": difference,
        "tolerance": model_format.tolerance,
        "same_class": float(np.mean(got.argmax(-1) == expected.argmax(-1))),
    }


@dataclass
class ExportResult:
    """A finished export: its model file (or SavedModel folder), manifest file and manifest."""

    model_file: Path
    manifest_file: Path
    manifest: dict[str, Any]


def _chosen_trial(study: optuna.Study, number: int | None) -> optuna.trial.FrozenTrial:
    """Trial ``number``, which must have a stored model; by default the best trial.

    Raises:
        AutodlError: If trial ``number`` does not exist or kept no model; without a
            number, if no trial has completed, or the study has several objectives (no
            best trial: the message names its Pareto front's trials).
    """
    if number is not None:
        return storage.trial_with_model(study, number)
    best = storage.best_trial(study, "export")
    if storage.is_multi_objective(study):
        front = ", ".join(str(trial.number) for trial in storage.pareto_front(study))
        raise AutodlError(f"study {study.study_name!r} tunes several objectives: choose a "
                          f"trial of its Pareto front with --trial N (front: {front})")
    return best


def export_study(
    study_name: str,
    out: str | Path,
    format: str | None = None,
    storage_url: str = DEFAULT_STORAGE,
    retrain_model: bool = False,
    force: bool = False,
    quiet: bool = True,
    trial_number: int | None = None,
) -> ExportResult:
    """Export a study's best model, or one trial's, verified against the stored one.

    Args:
        study_name: The study.
        out: The export to create: a folder, which gets the model and ``manifest.json``;
            or, if its name ends in the format's suffix (``.keras``, ``.tflite``,
            ``.onnx``), the model file itself, with its manifest beside it
            (:func:`manifest_beside`).
        format: A name in :data:`FORMATS`; by default the format whose suffix ``out``
            ends in, else ``keras``.
        storage_url: The study's Optuna storage.
        retrain_model: Train the trial's configuration again on training + validation
            data for the trial's best epoch count, instead of exporting its stored model.
        force: Replace ``out`` if it is an earlier export (or an empty folder).
        quiet: Hide the converters' own console output.
        trial_number: The trial to export, one with a stored model; by default the best
            trial. A study of several objectives has no best trial and needs one.

    Returns:
        The export's model file, manifest file and manifest.

    Raises:
        AutodlError: For an unknown format or study, an ``out`` named like another
            format's file, a study without a completed trial, a trial without a stored
            model, no ``trial_number`` for a study of several objectives, an existing
            ``out``, a missing converter or runtime, or a written model whose predictions
            differ from the stored model's. Nothing is left at ``out`` then.
    """
    out = Path(out)
    model_format = _choose_format(format, out)
    as_file = bool(model_format.suffix) and out.suffix == model_format.suffix
    _check_destination(out, force, as_file)
    model_format.require()
    study = storage.load_existing(storage_url, study_name)
    trial = _chosen_trial(study, trial_number)
    facts = storage.recorded_facts(study, _NEEDED_FACTS)
    splits = storage.study_splits(study)
    retrained = None
    if retrain_model:
        retrained = retrain(study, trial, splits)
        model = retrained.model
    else:
        model = storage.load_trial_model(study, trial, storage_url)
    expected = _batched(model.predict_on_batch)(splits.x_test)
    model_name = out.name if as_file else model_format.filename
    manifest_name = manifest_beside(out).name if as_file else MANIFEST
    with _staging(out, as_file) as staging:
        model_file = staging / model_name
        with native_stderr_hidden(quiet):
            model_format.write(model, model_file)
            probabilities, check = verify(model_format, model_file, splits.x_test, expected)
        manifest = {
            "format": model_format.name,
            "model": model_name,  # beside the manifest
            "study": study.study_name,
            "trial": trial.number,
            "arch": facts["arch"],
            "dataset": facts["dataset"],
            "objectives": storage.study_objectives(study),
            "hyperparameters": storage.hyperparameters(trial),
            # Measured on the architecture before it trained: a retrained model's too.
            "deployment": storage.deployment_figures(trial),
            "validation_accuracy": storage.objective_value(trial, ACCURACY),
            "test_accuracy": float(np.mean(probabilities.argmax(-1) == splits.y_test)),
            "test_examples": len(splits.y_test),
            "retrained": None if retrained is None else {
                "epochs": retrained.epochs, "examples": retrained.examples,
                "seed": retrained.seed, "history": retrained.history,
            },
            "input": {"shape": list(splits.input_shape),
                      "dtype": str(keras.backend.standardize_dtype(model.inputs[0].dtype))},
            "preprocessing": describe_preprocessing(facts, splits),
            "class_names": list(splits.class_names),
            "verification": check,
            "versions": {"autodl": __version__, **model_format.versions()},
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        (staging / manifest_name).write_text(json.dumps(manifest, indent=2) + "\n",
                                             encoding="utf-8")
    home = out.parent if as_file else out
    return ExportResult(home / model_name, home / manifest_name, manifest)


@dataclass
class ExportedModel:
    """An export, opened for predictions."""

    model_file: Path
    manifest: dict[str, Any]
    predict: Predictor


def _find_manifest(path: Path) -> tuple[Path, Path | None]:
    """The manifest of the export at ``path``, and the model file if ``path`` is one."""
    if (path / MANIFEST).is_file():  # an export folder
        return path / MANIFEST, None
    if manifest_beside(path).is_file():  # a model file exported on its own
        return manifest_beside(path), path
    if path.exists() and (path.parent / MANIFEST).is_file():  # a model in an export folder
        return path.parent / MANIFEST, None
    if not path.exists():
        raise AutodlError(f"export not found: {path}")
    where = (f"no {MANIFEST}" if path.is_dir() else
             f"no {manifest_beside(path).name} beside it, nor {MANIFEST} in its folder")
    raise AutodlError(f"{path} is not an autodl export ({where}); make one with `autodl export`")


def open_export(path: str | Path) -> ExportedModel:
    """Open an export and load its model with its format's runtime.

    Args:
        path: The export's folder, the model file in it, or a model file exported on
            its own (with its manifest beside it).

    Raises:
        AutodlError: If ``path`` is not an export, or its format's runtime is missing.
    """
    path = Path(path)
    manifest_file, model_file = _find_manifest(path)
    try:
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
        model_format = choose(FORMATS, manifest["format"], "format")
        model_file = model_file or manifest_file.parent / manifest["model"]
    except (OSError, ValueError, KeyError, TypeError, AutodlError) as error:
        raise AutodlError(f"{manifest_file} is not a valid export manifest: "
                          f"{error}") from None
    if path not in (manifest_file.parent, model_file):
        raise AutodlError(f"{path} is not the model of the export in {manifest_file.parent} "
                          f"(that is {model_file.name})")
    if not model_file.exists():
        raise AutodlError(f"{model_file} is missing")
    model_format.require(converter=False)
    try:
        predictor = model_format.load(model_file)
    except Exception as error:  # any runtime's refusal of a file it was given
        raise AutodlError(f"cannot load {model_file}: {_first_line(error)}") from None
    return ExportedModel(model_file, manifest, predictor)
