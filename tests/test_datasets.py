"""Dataset loaders and splits, on small generated files and on the real MNIST test set."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from autodl.datasets import Dataset, load_dataset, make_splits, read_idx
from autodl.errors import AutodlError

# --- helpers -------------------------------------------------------------------------


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """``array`` in the IDX format: magic (0, 0, type, ndim), big-endian sizes, data."""
    dtype = {0x08: ">u1", 0x0B: ">i2", 0x0D: ">f4"}[type_code]
    header = bytes([0, 0, type_code, array.ndim])
    sizes = b"".join(struct.pack(">I", size) for size in array.shape)
    return header + sizes + array.astype(dtype).tobytes()


def write_idx(path: Path, array: np.ndarray, type_code: int = 0x08) -> Path:
    data = idx_bytes(array, type_code)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def idx_pair(folder: Path, prefix: str, n: int, seed: int = 0, gz: bool = True):
    """Write ``<prefix>-images-idx3-ubyte[.gz]`` (n 6x5 images) and its labels file."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 6, 5), dtype=np.uint8)
    y = (np.arange(n) % 3).astype(np.uint8)
    suffix = ".gz" if gz else ""
    write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", x)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", y)
    return x, y


def save_npz(path: Path, **arrays: np.ndarray) -> str:
    np.savez(path, **arrays)
    return f"npz:{path}"


def labelled(n: int, classes: int = 3, shape: tuple[int, ...] = (4,), seed: int = 0):
    """``n`` float examples whose first feature is their label, labels cycling 0..classes-1."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.uniform(size=(n, *shape)).astype("float32")
    x.reshape(n, -1)[:, 0] = y
    return x, y


# --- npz -----------------------------------------------------------------------------


def test_npz_without_test_split(tmp_path: Path):
    x, y = labelled(30, shape=(8, 8, 1))
    data = load_dataset(save_npz(tmp_path / "d.npz", x_train=x, y_train=y))
    assert data.x_test is None and data.y_test is None
    assert data.x_train.shape == (30, 8, 8, 1) and data.x_train.dtype == np.float32
    np.testing.assert_allclose(data.x_train, x)  # floats are kept as they are
    np.testing.assert_array_equal(data.y_train, y)
    assert data.class_names == ["0", "1", "2"]
    assert data.name == f"npz:{tmp_path / 'd.npz'}"


def test_npz_with_test_split(tmp_path: Path):
    x, y = labelled(30, shape=(5, 5, 3))
    x_test, y_test = labelled(9, shape=(5, 5, 3), seed=1)
    spec = save_npz(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x_test, y_test=y_test)
    data = load_dataset(spec)
    assert data.x_train.shape == (30, 5, 5, 3)
    assert data.x_test.shape == (9, 5, 5, 3) and data.x_test.dtype == np.float32
    np.testing.assert_array_equal(data.y_test, y_test)
    np.testing.assert_allclose(data.x_test, x_test)


def test_npz_uint8_is_scaled_and_gets_a_channel_axis(tmp_path: Path):
    x = np.zeros((4, 3, 2), dtype=np.uint8)
    x[0, 0, 0], x[1, 2, 1], x[2, 1, 0] = 255, 51, 128
    data = load_dataset(save_npz(tmp_path / "d.npz", x_train=x, y_train=np.arange(4),
                                 x_test=x[:2], y_test=np.arange(2)))
    assert data.x_train.shape == (4, 3, 2, 1) and data.x_test.shape == (2, 3, 2, 1)
    assert data.x_train.dtype == np.float32
    assert data.x_train.min() == 0.0 and data.x_train.max() == 1.0
    assert data.x_train[1, 2, 1, 0] == pytest.approx(0.2)
    assert data.x_train[2, 1, 0, 0] == pytest.approx(128 / 255)


def test_npz_tabular_keeps_its_shape(tmp_path: Path):
    x, y = labelled(20, shape=(7,))
    data = load_dataset(save_npz(tmp_path / "d.npz", x_train=x, y_train=y))
    assert data.x_train.shape == (20, 7)


def test_npz_string_labels_map_to_class_names(tmp_path: Path):
    x, _ = labelled(6)
    y = np.array(["dog", "cat", "dog", "emu", "cat", "dog"])
    y_test = np.array(["emu", "dog"])
    data = load_dataset(save_npz(tmp_path / "d.npz", x_train=x, y_train=y,
                                 x_test=x[:2], y_test=y_test))
    assert data.class_names == ["cat", "dog", "emu"]
    assert data.y_train.tolist() == [1, 0, 1, 2, 0, 1]
    assert data.y_test.tolist() == [2, 1]  # the same mapping as the training labels
    assert [data.class_names[i] for i in data.y_train] == y.tolist()


def test_npz_labels_shared_between_train_and_test(tmp_path: Path):
    # A class only in the test split still gets its own index.
    x, _ = labelled(4)
    data = load_dataset(save_npz(tmp_path / "d.npz", x_train=x, y_train=np.array([3, 5, 3, 5]),
                                 x_test=x[:2], y_test=np.array([9, 3])))
    assert data.class_names == ["3", "5", "9"]
    assert data.y_train.tolist() == [0, 1, 0, 1] and data.y_test.tolist() == [2, 0]


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x_train": np.zeros((3, 2))}, "y_train"),
        ({"y_train": np.zeros(3)}, "x_train"),
        ({"images": np.zeros((3, 2)), "labels": np.zeros(3)}, "lacks x_train, y_train"),
        ({"x_train": np.zeros((3, 2)), "y_train": np.zeros(3), "x_test": np.zeros((1, 2))},
         "x_test and y_test"),
        ({"x_train": np.zeros((3, 2)), "y_train": np.zeros(3), "y_test": np.zeros(1)},
         "x_test and y_test"),
        ({"x_train": np.zeros((3, 2)), "y_train": np.zeros(4)}, "3 examples but 4 labels"),
        ({"x_train": np.zeros((3, 2)), "y_train": np.zeros(3),
          "x_test": np.zeros((2, 2)), "y_test": np.zeros(1)}, "2 test examples but 1"),
        ({"x_train": np.zeros((3, 2)), "y_train": np.zeros(3),
          "x_test": np.zeros((2, 5)), "y_test": np.zeros(2)}, "test examples are (5,)"),
    ],
)
def test_npz_bad_contents(tmp_path: Path, arrays: dict, message: str):
    with pytest.raises(AutodlError) as error:
        load_dataset(save_npz(tmp_path / "d.npz", **arrays))
    assert message in str(error.value)


def test_npz_missing_file(tmp_path: Path):
    with pytest.raises(AutodlError, match="npz file not found"):
        load_dataset(f"npz:{tmp_path / 'nope.npz'}")


def _truncated_npz(path: Path) -> None:
    np.savez(path, x_train=np.zeros((50, 8)), y_train=np.zeros(50))
    path.write_bytes(path.read_bytes()[:300])


def _npy_named_npz(path: Path) -> None:
    np.save(path.with_suffix(".npy"), np.zeros((3, 2)))
    path.with_suffix(".npy").rename(path)


def _corrupt_compressed_npz(path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez_compressed(path, x_train=rng.uniform(size=(500, 8)), y_train=np.zeros(500))
    data = bytearray(path.read_bytes())
    for i in range(200, 2000):  # inside the deflate stream of the first member
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(lambda p: p.write_text("just some text\n"), id="text"),
        pytest.param(lambda p: p.write_bytes(b""), id="empty"),
        pytest.param(lambda p: p.write_bytes(b"PK\x03\x04" + b"\x01" * 64), id="bad-zip"),
        pytest.param(_truncated_npz, id="truncated"),
        pytest.param(_corrupt_compressed_npz, id="corrupt-deflate"),
        pytest.param(lambda p: np.savez(p, x_train=np.zeros((2, 2)),
                                        y_train=np.array([1, "a"], dtype=object)),
                     id="object-array"),
        pytest.param(_npy_named_npz, id="npy-not-npz"),
    ],
)
def test_npz_unreadable_file(tmp_path: Path, write):
    path = tmp_path / "d.npz"
    write(path)
    with pytest.raises(AutodlError) as error:
        load_dataset(f"npz:{path}")
    assert str(path) in str(error.value)


# --- idx -----------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trip(tmp_path: Path, gz: bool):
    x = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / ("a.idx.gz" if gz else "a.idx"), x)
    out = read_idx(path)
    assert out.shape == (2, 3, 4) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, x)


def test_read_idx_other_types(tmp_path: Path):
    shorts = np.array([[-2, 300], [7, -32000]], dtype=np.int16)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "s", shorts, 0x0B)), shorts)
    floats = np.array([0.5, -1.25, 3.0], dtype=np.float32)
    out = read_idx(write_idx(tmp_path / "f", floats, 0x0D))
    assert out.dtype == np.float32 and out.dtype.isnative
    np.testing.assert_array_equal(out, floats)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_train_and_t10k_pairs_give_train_and_test(tmp_path: Path, gz: bool):
    x, y = idx_pair(tmp_path, "train", 12, seed=0, gz=gz)
    x_test, y_test = idx_pair(tmp_path, "t10k", 6, seed=1, gz=gz)
    data = load_dataset(f"idx:{tmp_path}")
    assert data.name == f"idx:{tmp_path}"
    assert data.x_train.shape == (12, 6, 5, 1) and data.x_test.shape == (6, 6, 5, 1)
    assert data.x_train.dtype == np.float32
    np.testing.assert_allclose(data.x_train[..., 0], x / 255.0, rtol=1e-6)
    np.testing.assert_allclose(data.x_test[..., 0], x_test / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(data.y_train, y)
    np.testing.assert_array_equal(data.y_test, y_test)
    assert data.class_names == ["0", "1", "2"]


def test_idx_single_pair_is_one_split(tmp_path: Path):
    x, y = idx_pair(tmp_path, "t10k", 9)
    data = load_dataset(f"idx:{tmp_path}")
    assert data.x_test is None and data.y_test is None
    assert data.x_train.shape == (9, 6, 5, 1)
    np.testing.assert_array_equal(data.y_train, y)


def test_idx_dot_separated_names(tmp_path: Path):
    x = np.zeros((4, 2, 2), dtype=np.uint8)
    write_idx(tmp_path / "emnist.images.idx3-ubyte", x)
    write_idx(tmp_path / "emnist.labels.idx1-ubyte", np.array([0, 1, 0, 1], dtype=np.uint8))
    assert load_dataset(f"idx:{tmp_path}").x_train.shape == (4, 2, 2, 1)


def test_idx_labels_without_images_are_ignored(tmp_path: Path):
    # As MNIST is shipped here: train labels alone, beside the t10k pair.
    idx_pair(tmp_path, "t10k", 9)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(60, dtype=np.uint8))
    (tmp_path / "README.txt").write_text("not an IDX file")
    data = load_dataset(f"idx:{tmp_path}")
    assert data.x_test is None and len(data.y_train) == 9


def test_idx_images_without_labels(tmp_path: Path):
    idx_pair(tmp_path, "t10k", 9)
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((5, 6, 5), dtype=np.uint8))
    with pytest.raises(AutodlError, match="train-images-idx3-ubyte.gz has no matching train-lab"):
        load_dataset(f"idx:{tmp_path}")


def test_idx_two_unrelated_pairs(tmp_path: Path):
    idx_pair(tmp_path, "a", 4)
    idx_pair(tmp_path, "b", 4)
    with pytest.raises(AutodlError, match="a, b; expected one pair, or train and t10k"):
        load_dataset(f"idx:{tmp_path}")


def test_idx_count_mismatch(tmp_path: Path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((5, 2, 2), dtype=np.uint8))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(4, dtype=np.uint8))
    with pytest.raises(AutodlError, match="5 examples but 4 labels"):
        load_dataset(f"idx:{tmp_path}")


def test_idx_missing_or_empty_folder(tmp_path: Path):
    with pytest.raises(AutodlError, match="IDX folder not found"):
        load_dataset(f"idx:{tmp_path / 'nope'}")
    (tmp_path / "notes.txt").write_text("nothing here")
    with pytest.raises(AutodlError, match="no IDX images/labels pair"):
        load_dataset(f"idx:{tmp_path}")


def _bad_magic(data: bytes) -> bytes:
    return b"\x01\x02" + data[2:]


def _bad_type(data: bytes) -> bytes:
    return data[:2] + b"\x07" + data[3:]


@pytest.mark.parametrize(
    ("corrupt", "gz", "message"),
    [
        (_bad_magic, False, "bad magic"),
        (_bad_type, True, "bad magic"),
        (lambda d: d[:3], False, "bad magic"),
        (lambda d: d[:-7], False, "truncated or corrupt"),
        (lambda d: d[:-7], True, "truncated or corrupt"),
        (lambda d: d[:10], False, "truncated or corrupt"),  # cut inside the header
        (lambda d: d + b"\0", False, "truncated or corrupt"),
        (lambda d: gzip.compress(d)[:40], None, "cannot read"),  # gzip stream cut short
        (lambda d: b"not gzip at all" * 4, None, "cannot read"),
    ],
)
def test_idx_corrupt_files(tmp_path: Path, corrupt, gz, message: str):
    data = idx_bytes(np.arange(60, dtype=np.uint8).reshape(5, 3, 4))
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    raw = corrupt(data)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    if gz is False:
        path = path.rename(path.with_suffix(""))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(5, dtype=np.uint8))
    with pytest.raises(AutodlError, match=message) as error:
        load_dataset(f"idx:{tmp_path}")
    assert str(path) in str(error.value)


# --- images --------------------------------------------------------------------------


def _photo(path: Path, color, size=(20, 12), mode="RGB", fmt=None) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path, format=fmt)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """Three class folders of solid-colour pictures, in several formats and modes."""
    root = tmp_path / "photos"
    _photo(root / "red" / "a.png", (255, 0, 0))
    _photo(root / "red" / "b.jpg", (255, 0, 0), size=(31, 17))
    _photo(root / "blue" / "c.JPEG", (0, 0, 255), size=(9, 40))
    _photo(root / "blue" / "d.png", (0, 0, 255, 255), mode="RGBA")
    _photo(root / "gray" / "e.png", 128, mode="L", size=(5, 5))
    _photo(root / "gray" / "f.bmp", 128, mode="L")
    (root / "gray" / "notes.txt").write_text("not an image")
    (root / "README.md").write_text("ignored: not in a class folder")
    _photo(root / ".thumbnails" / "x.png", (0, 255, 0))  # hidden folder: not a class
    return root


def test_images_folder(photos: Path):
    data = load_dataset(f"images:{photos}", image_size=16)
    assert data.class_names == ["blue", "gray", "red"]
    assert data.x_train.shape == (6, 16, 16, 3) and data.x_train.dtype == np.float32
    assert data.x_test is None
    names = [data.class_names[i] for i in data.y_train]
    assert sorted(names) == ["blue", "blue", "gray", "gray", "red", "red"]
    expected = {"red": (1, 0, 0), "blue": (0, 0, 1), "gray": (128 / 255,) * 3}
    for image, name in zip(data.x_train, names, strict=True):
        np.testing.assert_allclose(image.mean(axis=(0, 1)), expected[name], atol=0.02)


def test_images_resized_to_image_size(photos: Path):
    assert load_dataset(f"images:{photos}", image_size=7).x_train.shape == (6, 7, 7, 3)
    assert load_dataset(f"images:{photos}").x_train.shape == (6, 96, 96, 3)  # the default


def test_images_keep_their_layout(tmp_path: Path):
    from PIL import Image

    # Red on the left, and a blue bottom-right quarter, in a wide 40x20 picture.
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :20] = (255, 0, 0)
    pixels[10:, 20:] = (0, 0, 255)
    (tmp_path / "only").mkdir()
    Image.fromarray(pixels).save(tmp_path / "only" / "a.png")
    image = load_dataset(f"images:{tmp_path}", image_size=10).x_train[0]
    np.testing.assert_allclose(image[:, :4], np.broadcast_to([1, 0, 0], (10, 4, 3)), atol=0.01)
    np.testing.assert_allclose(image[6:, 6:], np.broadcast_to([0, 0, 1], (4, 4, 3)), atol=0.01)
    np.testing.assert_allclose(image[:4, 6:], 0, atol=0.01)


def test_images_missing_folder(tmp_path: Path):
    with pytest.raises(AutodlError, match="image folder not found"):
        load_dataset(f"images:{tmp_path / 'nope'}")


def test_images_empty_folder(tmp_path: Path):
    (tmp_path / "cats").mkdir()
    (tmp_path / "cats" / "list.txt").write_text("no images")
    _photo(tmp_path / "loose.png", (1, 2, 3))  # not in a class folder
    with pytest.raises(AutodlError, match="no images in .*one sub-folder per class"):
        load_dataset(f"images:{tmp_path}")


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"this is not a PNG", id="garbage"),
        pytest.param(b"", id="empty"),
    ],
)
def test_images_unreadable_image_is_named(photos: Path, content: bytes):
    bad = photos / "red" / "broken.png"
    bad.write_bytes(content)
    with pytest.raises(AutodlError, match="cannot read image") as error:
        load_dataset(f"images:{photos}", image_size=8)
    assert str(bad) in str(error.value)


def test_images_truncated_jpeg_is_named(photos: Path):
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    bad = photos / "blue" / "cut.jpg"
    bad.write_bytes(buffer.getvalue()[:600])
    with pytest.raises(AutodlError, match="cannot read image") as error:
        load_dataset(f"images:{photos}", image_size=8)
    assert str(bad) in str(error.value)


# --- built-in and Keras datasets -----------------------------------------------------


def test_digits():
    data = load_dataset("digits")
    assert data.name == "digits"
    assert data.x_train.shape == (1797, 8, 8, 1) and data.x_train.dtype == np.float32
    assert data.x_train.min() == 0.0 and data.x_train.max() == 1.0
    assert data.class_names == [str(i) for i in range(10)]
    assert np.bincount(data.y_train).min() > 170
    assert data.x_test is None


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_keras_dataset_offline_names_the_cache(name: str, empty_keras_home: Path, offline):
    with pytest.raises(AutodlError) as error:
        load_dataset(name)
    message = str(error.value)
    assert f"{name} is not in the Keras cache ({empty_keras_home / 'datasets'})" in message
    assert "could not be downloaded" in message
    assert "idx:DIR" in message


@pytest.mark.parametrize("spec", ["nope", "npz:", "idx:", "images:", "csv:data.csv", "MNIST"])
def test_unknown_dataset_spec(spec: str):
    with pytest.raises(AutodlError, match="unknown dataset"):
        load_dataset(spec)


# --- make_splits ---------------------------------------------------------------------


def dataset(n: int, classes: int = 3, n_test: int | None = None) -> Dataset:
    x, y = labelled(n, classes)
    if n_test is None:
        return Dataset("toy", x, y, [str(c) for c in range(classes)])
    x_test, y_test = labelled(n_test, classes, seed=1)
    return Dataset("toy", x, y, [str(c) for c in range(classes)], x_test, y_test)


def test_split_sizes_without_test_split():
    splits = make_splits(dataset(100), val_split=0.1, test_split=0.2)
    assert (len(splits.y_train), len(splits.y_val), len(splits.y_test)) == (72, 8, 20)
    assert splits.input_shape == (4,) and splits.num_classes == 3
    assert splits.class_names == ["0", "1", "2"]
    assert splits.describe() == "72 train / 8 val / 20 test, 4, 3 classes"
    # Every example lands in exactly one part, with its own label.
    parts = (splits.x_train, splits.x_val, splits.x_test)
    ids = np.concatenate([p[:, 1] for p in parts])
    assert len(np.unique(ids)) == 100
    for x, y in ((splits.x_train, splits.y_train), (splits.x_val, splits.y_val),
                 (splits.x_test, splits.y_test)):
        np.testing.assert_array_equal(x[:, 0], y)


def test_splits_are_stratified():
    splits = make_splits(dataset(60, classes=3), val_split=0.1, test_split=0.2)
    assert sorted(np.bincount(splits.y_test)) == [4, 4, 4]
    assert set(splits.y_val) == {0, 1, 2}
    assert np.bincount(splits.y_train, minlength=3).min() >= 14


def test_stratified_with_a_rare_class():
    x, y = labelled(50, classes=2)
    y[:5] = 2  # five examples of a third class
    x[:, 0] = y
    splits = make_splits(Dataset("rare", x, y, ["a", "b", "c"]), val_split=0.2, test_split=0.2)
    assert 2 in splits.y_test and 2 in splits.y_val and 2 in splits.y_train


def test_splits_are_deterministic():
    first = make_splits(dataset(90), seed=3)
    again = make_splits(dataset(90), seed=3)
    other = make_splits(dataset(90), seed=4)
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    assert not np.array_equal(first.x_test, other.x_test)


def test_own_test_split_is_kept():
    data = dataset(50, n_test=17)
    splits = make_splits(data, val_split=0.2, test_split=0.5)
    np.testing.assert_array_equal(splits.x_test, data.x_test)  # not reshuffled, not cut
    np.testing.assert_array_equal(splits.y_test, data.y_test)
    assert (len(splits.y_train), len(splits.y_val)) == (40, 10)  # test_split is not used
    assert not np.isin(splits.x_train[:, 1], data.x_test[:, 1]).any()


def test_max_samples_caps_train_and_test():
    splits = make_splits(dataset(200, n_test=100), val_split=0.1, max_samples=40)
    assert len(splits.y_train) + len(splits.y_val) == 40
    assert len(splits.y_test) == 40
    assert set(splits.y_test) == {0, 1, 2}
    # Without a test split of its own, the cap applies before the test part is held out.
    splits = make_splits(dataset(200), val_split=0.1, test_split=0.25, max_samples=40)
    assert (len(splits.y_train), len(splits.y_val), len(splits.y_test)) == (27, 3, 10)
    # A cap above the size changes nothing.
    assert len(make_splits(dataset(30), max_samples=1000).y_test) == 6


@pytest.mark.parametrize("n", [0, 1, 2])
def test_too_small_to_split(n: int):
    data = Dataset("tiny", np.zeros((n, 3), "float32"), np.arange(n) % 2, ["0", "1"])
    with pytest.raises(AutodlError, match="tiny is too small to split"):
        make_splits(data)


def test_too_small_training_part_with_own_test_split():
    data = dataset(1, n_test=5)
    with pytest.raises(AutodlError, match="too small to split"):
        make_splits(data)


def test_smallest_splittable():
    splits = make_splits(dataset(3, classes=2))
    assert (len(splits.y_train), len(splits.y_val), len(splits.y_test)) == (1, 1, 1)


# --- the real MNIST test set ---------------------------------------------------------

MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_real_mnist_idx(shared_datasets: Path):
    folder = shared_datasets / "mnist"
    data = load_dataset(f"idx:{folder}")  # train labels alone are ignored: one split
    assert data.x_test is None
    assert data.x_train.shape == (10000, 28, 28, 1) and data.x_train.dtype == np.float32
    assert data.x_train.min() == 0.0 and data.x_train.max() == 1.0
    assert data.class_names == [str(i) for i in range(10)]
    assert data.y_train[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert np.bincount(data.y_train).tolist() == MNIST_TEST_COUNTS
    # Image 0 is a 7: ink in the top bar, none in the bottom-left corner.
    seven = data.x_train[0, ..., 0]
    assert seven[7:10, 6:21].mean() > 0.4 and seven[20:, :8].max() == 0.0
    labels = read_idx(folder / "train-labels-idx1-ubyte.gz")
    assert labels.shape == (60000,) and labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]

    splits = make_splits(data, val_split=0.1, test_split=0.2, max_samples=2000, seed=0)
    assert (len(splits.y_train) + len(splits.y_val), len(splits.y_test)) == (1600, 400)
    counts = np.bincount(splits.y_test)
    np.testing.assert_allclose(counts / 400, np.array(MNIST_TEST_COUNTS) / 10000, atol=0.01)
