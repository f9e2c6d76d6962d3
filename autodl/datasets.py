"""Datasets: load once per process, then split into training, validation and test parts.

Images come out as float32 arrays in [0, 1], shaped ``(n, height, width, channels)``;
labels as integer class indices with ``class_names`` beside them. Tabular ``npz`` data
keeps its shape.

Dataset specs:
    ``digits`` (bundled with scikit-learn, works offline), ``mnist``, ``fashion_mnist``,
    ``cifar10`` (through ``keras.datasets``), ``npz:PATH``, ``idx:DIR``, ``images:DIR``.
"""

from __future__ import annotations

import gzip
import os
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autodl.errors import AutodlError

KERAS_DATASETS = ("mnist", "fashion_mnist", "cifar10")
DATASETS = ("digits", *KERAS_DATASETS, "npz:PATH", "idx:DIR", "images:DIR")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


@dataclass
class Dataset:
    """A loaded dataset; ``x_test`` is ``None`` when it has no test split of its own."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    class_names: list[str]
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None


@dataclass
class Splits:
    """The three parts a study uses; the test part is only for the final best model."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one example."""
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        """How many classes the labels index."""
        return len(self.class_names)

    def describe(self) -> str:
        """One line for people: sizes, shape and classes."""
        shape = "x".join(map(str, self.input_shape))
        return (
            f"{len(self.y_train)} train / {len(self.y_val)} val / {len(self.y_test)} test, "
            f"{shape}, {self.num_classes} classes"
        )


def _as_images(x: np.ndarray) -> np.ndarray:
    """Scale 8-bit pixels to [0, 1] and give grayscale images a channel axis."""
    x = x.astype("float32") / 255.0 if x.dtype == np.uint8 else x.astype("float32")
    return x[..., None] if x.ndim == 3 else x


def _encode_labels(*label_arrays: np.ndarray) -> tuple[list[np.ndarray], list[str]]:
    """Map labels of any type to indices 0..k-1, shared across the given arrays."""
    classes = np.unique(np.concatenate([np.asarray(y).ravel() for y in label_arrays]))
    codes = [np.searchsorted(classes, np.asarray(y).ravel()).astype("int64") for y in label_arrays]
    return codes, [str(c) for c in classes]


def _dataset(name: str, x: np.ndarray, y: np.ndarray, x_test=None, y_test=None) -> Dataset:
    if len(x) != len(y):
        raise AutodlError(f"{name}: {len(x)} examples but {len(y)} labels")
    if x_test is None:
        (y,), class_names = _encode_labels(y)
        return Dataset(name, x, y, class_names)
    if len(x_test) != len(y_test):
        raise AutodlError(f"{name}: {len(x_test)} test examples but {len(y_test)} test labels")
    if x_test.shape[1:] != x.shape[1:]:
        raise AutodlError(f"{name}: test examples are {x_test.shape[1:]}, train {x.shape[1:]}")
    (y, y_test), class_names = _encode_labels(y, y_test)
    return Dataset(name, x, y, class_names, x_test, y_test)


def _load_digits() -> Dataset:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Pixels are counts 0..16 of an 8x8 grid.
    x = (digits.images.astype("float32") / 16.0)[..., None]
    return _dataset("digits", x, digits.target)


def _keras_home() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))


def _load_keras_dataset(name: str) -> Dataset:
    import keras

    try:
        (x, y), (x_test, y_test) = getattr(keras.datasets, name).load_data()
    except Exception as error:  # urllib, HTTP and file errors all mean "not available"
        raise AutodlError(
            f"{name} is not in the Keras cache ({_keras_home() / 'datasets'}) and could not "
            f"be downloaded ({type(error).__name__}); copy Keras's {name} files there, "
            "or use --dataset idx:DIR, npz:PATH or images:DIR"
        ) from None
    return _dataset(name, _as_images(x), y, _as_images(x_test), y_test)


def _load_npz(path: str) -> Dataset:
    file = Path(path)
    if not file.is_file():
        raise AutodlError(f"npz file not found: {path}")
    try:
        loaded = np.load(file, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # an .npy file: one bare array
            raise AutodlError(f"{path} holds a single array, not an .npz archive of named arrays")
        with loaded as arrays:
            data = {key: arrays[key] for key in arrays.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise AutodlError(f"cannot read {path} as .npz: {error}") from None
    missing = {"x_train", "y_train"} - set(data)
    if missing:
        raise AutodlError(f"{path} lacks {', '.join(sorted(missing))} (has {', '.join(data)})")
    if ("x_test" in data) != ("y_test" in data):
        raise AutodlError(f"{path}: give both x_test and y_test, or neither")
    x_test = _as_images(data["x_test"]) if "x_test" in data else None
    return _dataset(f"npz:{path}", _as_images(data["x_train"]), data["y_train"],
                    x_test, data.get("y_test"))


_IDX_NAME = re.compile(r"(?P<prefix>.+?)[-.](?P<kind>images|labels)[-.]idx\d-ubyte(\.gz)?")
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (the MNIST format), gzipped or not.

    Raises:
        AutodlError: If the file is not valid IDX.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as stream:
            data = stream.read()
    except (OSError, EOFError, zlib.error) as error:  # also truncated or corrupt gzip
        raise AutodlError(f"cannot read {path}: {error}") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _IDX_TYPES:
        raise AutodlError(f"{path} is not an IDX file (bad magic number)")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_TYPES[data[2]])
    offset = 4 + 4 * ndim
    if len(data) - offset != int(np.prod(shape)) * dtype.itemsize:
        raise AutodlError(f"{path} is truncated or corrupt: header says {shape}")
    return np.frombuffer(data, dtype, offset=offset).reshape(shape).astype(dtype.newbyteorder("="))


def _load_idx(path: str) -> Dataset:
    folder = Path(path)
    if not folder.is_dir():
        raise AutodlError(f"IDX folder not found: {path}")
    pairs: dict[str, dict[str, Path]] = {}
    for file in sorted(folder.iterdir()):
        match = _IDX_NAME.fullmatch(file.name)
        if match:
            pairs.setdefault(match["prefix"], {})[match["kind"]] = file
    # A labels file without its images (MNIST ships train labels alone) is not a split.
    splits = {prefix: files for prefix, files in pairs.items() if "images" in files}
    for prefix, files in splits.items():
        if "labels" not in files:
            raise AutodlError(f"{files['images']} has no matching {prefix}-labels file")
    if not splits:
        raise AutodlError(f"no IDX images/labels pair in {path} (e.g. t10k-images-idx3-ubyte.gz)")
    loaded = {p: (read_idx(f["images"]), read_idx(f["labels"])) for p, f in splits.items()}
    name = f"idx:{path}"
    if len(loaded) == 1:
        (x, y), = loaded.values()
        return _dataset(name, _as_images(x), y)
    if set(loaded) != {"train", "t10k"}:
        raise AutodlError(
            f"{path} holds IDX splits {', '.join(sorted(loaded))}; expected one pair, "
            "or train and t10k"
        )
    (x, y), (x_test, y_test) = loaded["train"], loaded["t10k"]
    return _dataset(name, _as_images(x), y, _as_images(x_test), y_test)


def _load_images(path: str, image_size: int) -> Dataset:
    from PIL import Image, UnidentifiedImageError

    folder = Path(path)
    if not folder.is_dir():
        raise AutodlError(f"image folder not found: {path}")
    classes = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    files = [
        (f, label)
        for label, d in enumerate(classes)
        for f in sorted(d.iterdir())
        if f.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not files:
        raise AutodlError(
            f"no images in {path}: expected one sub-folder per class holding "
            f"{', '.join(sorted(IMAGE_SUFFIXES))} files"
        )
    x = np.empty((len(files), image_size, image_size, 3), dtype=np.uint8)
    for i, (file, _) in enumerate(files):
        try:
            with Image.open(file) as image:
                image = image.convert("RGB").resize((image_size, image_size), Image.BILINEAR)
                x[i] = np.asarray(image)
        except (OSError, UnidentifiedImageError) as error:
            raise AutodlError(f"cannot read image {file}: {error}") from None
    labels = np.array([classes[label].name for _, label in files])
    return _dataset(f"images:{path}", _as_images(x), labels)


def load_dataset(spec: str, image_size: int = 96) -> Dataset:
    """Load a dataset by its spec.

    Args:
        spec: ``digits``, ``mnist``, ``fashion_mnist``, ``cifar10``, ``npz:PATH``,
            ``idx:DIR`` or ``images:DIR``.
        image_size: Side in pixels that ``images:`` photos are resized to.

    Returns:
        The dataset, with its own test split if it has one.

    Raises:
        AutodlError: For an unknown spec, a missing path or unreadable data.
    """
    kind, sep, path = spec.partition(":")
    if not sep:
        if spec == "digits":
            return _load_digits()
        if spec in KERAS_DATASETS:
            return _load_keras_dataset(spec)
    elif path and kind == "npz":
        return _load_npz(path)
    elif path and kind == "idx":
        return _load_idx(path)
    elif path and kind == "images":
        return _load_images(path, image_size)
    raise AutodlError(f"unknown dataset {spec!r}; choose from {', '.join(DATASETS)}")


def _split(x: np.ndarray, y: np.ndarray, fraction: float, seed: int):
    """Hold out ``fraction`` of the examples, stratified when every class allows it."""
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y)
    stratify = y if counts[counts > 0].min() >= 2 else None
    try:
        return train_test_split(x, y, test_size=fraction, random_state=seed, stratify=stratify)
    except ValueError:  # too few examples per class for a stratified split of this size
        return train_test_split(x, y, test_size=fraction, random_state=seed)


def _subsample(x: np.ndarray, y: np.ndarray, limit: int | None, seed: int):
    if limit is None or len(y) <= limit:
        return x, y
    _, x_kept, _, y_kept = _split(x, y, limit / len(y), seed)
    return x_kept, y_kept


def make_splits(
    dataset: Dataset,
    val_split: float = 0.1,
    test_split: float = 0.2,
    max_samples: int | None = None,
    seed: int = 0,
) -> Splits:
    """Split a dataset for a study; the same arguments always give the same splits.

    Args:
        dataset: The loaded dataset.
        val_split: Fraction of the training part held out for validation.
        test_split: Fraction held out for testing when the dataset has no test split.
        max_samples: Use at most this many training examples (and test examples).
        seed: Seed of the (stratified) random splits.

    Raises:
        AutodlError: If a part would be empty.
    """
    too_small = AutodlError(
        f"{dataset.name} is too small to split ({len(dataset.y_train)} examples)"
    )
    try:
        x, y = _subsample(dataset.x_train, dataset.y_train, max_samples, seed)
        if dataset.x_test is None:
            x, x_test, y, y_test = _split(x, y, test_split, seed)
        else:
            x_test, y_test = _subsample(dataset.x_test, dataset.y_test, max_samples, seed)
        x_train, x_val, y_train, y_val = _split(x, y, val_split, seed)
    except ValueError:  # scikit-learn refuses a split that would leave a part empty
        raise too_small from None
    if min(len(y_train), len(y_val), len(y_test)) == 0:
        raise too_small
    return Splits(x_train, y_train, x_val, y_val, x_test, y_test, dataset.class_names)
