"""Classify image files or arrays with an exported model (``autodl predict``).

Inputs are prepared as the export's manifest says the study's data was (see
:func:`autodl.export.describe_preprocessing`): an image file is converted to the model's
channel count (grayscale or RGB), resized to its input size and scaled to its value
range, so a 28x28 PNG digit works with a model tuned on 8x8 digits. Arrays come from
``.npz`` files (the array ``x``, or the only one) or ``.npy`` files, one example or a
batch, in the dataset's own units: 8-bit integers are scaled like image pixels, other
values by the manifest's ``array_scale`` (the digits' 0..16 ink counts by 1/16).
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autodl._imports import native_stderr_hidden
from autodl.errors import AutodlError
from autodl.export import open_export

ARRAY_SUFFIXES = (".npz", ".npy")


@dataclass(frozen=True)
class Prediction:
    """The most probable class of one input."""

    source: str
    class_index: int
    class_name: str
    probability: float


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def load_image(path: Path, preprocessing: dict[str, Any]) -> np.ndarray:
    """Read an image file as one model input.

    Args:
        path: A PNG, JPEG or any other image file Pillow reads.
        preprocessing: The manifest's ``preprocessing`` table.

    Returns:
        A float32 array of shape ``(height, width, channels)``.

    Raises:
        AutodlError: If the file is not a readable image, or the model takes no images.
    """
    from PIL import Image, UnidentifiedImageError

    if preprocessing["kind"] != "image":
        raise AutodlError(f"{path}: this model takes arrays, not images; give an .npz file")
    size = (preprocessing["width"], preprocessing["height"])
    try:
        with Image.open(path) as image:
            image = image.convert(preprocessing["color_mode"]).resize(size, Image.BILINEAR)
            pixels = np.asarray(image, dtype="float32")
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise AutodlError(f"cannot read image {path}: {error}") from None
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    return pixels * preprocessing["pixel_scale"] + preprocessing["pixel_offset"]


def _read_array(path: Path) -> np.ndarray:
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            return loaded
        with loaded as arrays:
            names = list(arrays.files)
            if "x" in names or len(names) == 1:
                return arrays["x" if "x" in names else names[0]]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise AutodlError(f"cannot read {path} as arrays: {error}") from None
    raise AutodlError(f"{path} has no array named x (it has {', '.join(names) or 'none'})")


def load_arrays(path: Path, manifest: dict[str, Any]) -> np.ndarray:
    """Read an ``.npz`` or ``.npy`` file as model inputs.

    Args:
        path: The file: one example, or a batch along the first axis; a missing
            single channel axis is added.
        manifest: The export's manifest.

    Returns:
        A float32 array of shape ``(n, *input_shape)``.

    Raises:
        AutodlError: If the file cannot be read or its shape does not fit the model.
    """
    x = _read_array(path)
    shape = tuple(manifest["input"]["shape"])
    if shape[-1] == 1 and x.shape[-len(shape) + 1:] == shape[:-1]:
        x = x[..., None]  # images without their channel axis
    if x.shape == shape:
        x = x[None]
    if x.shape[1:] != shape or not np.issubdtype(x.dtype, np.number) or len(x) == 0:
        raise AutodlError(
            f"{path}: expected numbers of shape {_shape_text(shape)} or "
            f"N x {_shape_text(shape)}, got {x.dtype} {_shape_text(x.shape)}"
        )
    preprocessing = manifest["preprocessing"]
    if x.dtype == np.uint8:
        x = x * preprocessing["pixel_scale"] + preprocessing["pixel_offset"]
    else:
        x = x * preprocessing["array_scale"]
    return x.astype("float32")


def predict_files(export: str | Path, files: list[str], quiet: bool = True) -> list[Prediction]:
    """Classify image files and array files with an exported model.

    Args:
        export: An export made by ``autodl export``: its folder, the model file in it, or
            a model file exported on its own (with its manifest beside it).
        files: Image files, and ``.npz``/``.npy`` files of arrays.
        quiet: Hide the runtime's own console output.

    Returns:
        One prediction per image and per array example, in order; an array file's
        examples are named ``FILE[i]``.

    Raises:
        AutodlError: If ``export`` is not an export, or a file is missing or unreadable.
    """
    with native_stderr_hidden(quiet):
        model = open_export(export)
    manifest = model.manifest
    names: list[str] = []
    inputs: list[np.ndarray] = []
    for file in files:
        path = Path(file)
        if not path.is_file():
            raise AutodlError(f"file not found: {file}")
        if path.suffix.lower() in ARRAY_SUFFIXES:
            x = load_arrays(path, manifest)
            names += [f"{file}[{i}]" for i in range(len(x))]
        else:
            x = load_image(path, manifest["preprocessing"])[None]
            names.append(file)
        inputs.append(x)
    with native_stderr_hidden(quiet):
        probabilities = model.predict(np.concatenate(inputs).astype("float32"))
    classes = probabilities.argmax(axis=-1)
    return [
        Prediction(name, int(c), str(manifest["class_names"][c]), float(p[c]))
        for name, c, p in zip(names, classes, probabilities, strict=True)
    ]
