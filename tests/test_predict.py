"""`autodl predict`: image files and arrays prepared as the export's manifest says."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import make_images, tune_args
from PIL import Image

from autodl.cli import main

SIZE = 32  # the PNGs are 4x the model's 8x8 input


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    """A keras export of a well-trained mlp on the 8x8 class-band images (float npz data)."""
    folder = tmp_path_factory.mktemp("predict")
    x, y = make_images(120)
    np.savez(folder / "bands.npz", x_train=x, y_train=y)
    settings = ["learning_rate=0.01", "optimizer=adam", "weight_decay=0", "batch_size=16",
                "depth=1", "units=64", "activation=relu", "dropout=0"]
    cwd = Path.cwd()
    os.chdir(folder)
    try:
        args = tune_args("npz:bands.npz", "--study", "bands", "--pruner", "none", "--epochs",
                         "15", "--patience", "15", *[f"--set={s}" for s in settings], trials=1)
        assert main(args) == 0
        assert main(["export", "bands", "--out", "model"]) == 0
    finally:
        os.chdir(cwd)
    manifest = json.loads((folder / "model" / "manifest.json").read_text())
    assert manifest["test_accuracy"] == 1.0
    return folder / "model"


def band_images(n: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Class-band images as 8-bit pixels, scaled up from 8x8 to SIZE x SIZE."""
    x, y = make_images(n, seed=seed)
    big = np.kron(x[..., 0], np.ones((SIZE // 8, SIZE // 8)))
    return (big * 255).round().astype("uint8"), y


def predict(model_folder: Path, files: list[Path], capsys) -> list[list[str]]:
    capsys.readouterr()
    assert main(["predict", str(model_folder), *map(str, files)]) == 0
    return [line.split("\t") for line in capsys.readouterr().out.splitlines()]


def test_png_files_of_another_size_are_resized(model_folder, tmp_path, capsys):
    pixels, labels = band_images(9)
    files = []
    for i, (image, label) in enumerate(zip(pixels, labels, strict=True)):
        files.append(tmp_path / f"digit{i}-{label}.png")
        Image.fromarray(image).save(files[-1])
    rows = predict(model_folder, files, capsys)
    assert [row[0] for row in rows] == [str(f) for f in files]
    assert [row[1] for row in rows] == [str(label) for label in labels]
    assert all(0.5 < float(row[2]) <= 1.0 for row in rows)


def test_color_images_become_grayscale(model_folder, tmp_path, capsys):
    pixels, labels = band_images(3, seed=3)
    files = [tmp_path / "a.png", tmp_path / "b.jpg", tmp_path / "c.png"]
    Image.fromarray(pixels[0]).convert("RGB").save(files[0])
    Image.fromarray(pixels[1]).convert("RGB").save(files[1], quality=95)
    Image.fromarray(pixels[2]).convert("RGBA").save(files[2])
    rows = predict(model_folder, files, capsys)
    assert [row[1] for row in rows] == [str(label) for label in labels]


def test_npz_arrays_float_and_uint8(model_folder, tmp_path, capsys):
    x, y = make_images(6, seed=11)
    floats, bytes_ = tmp_path / "floats.npz", tmp_path / "bytes.npz"
    np.savez(floats, x=x[..., 0])  # without the channel axis
    np.savez(bytes_, x=(x * 255).round().astype("uint8"))  # 8-bit: scaled like pixels
    rows = predict(model_folder, [floats, bytes_], capsys)
    assert [row[0] for row in rows] == ([f"{floats}[{i}]" for i in range(6)]
                                        + [f"{bytes_}[{i}]" for i in range(6)])
    assert [row[1] for row in rows] == [str(label) for label in y] * 2


def test_the_export_folder_or_the_model_file_in_it(model_folder, tmp_path, capsys):
    x, y = make_images(4, seed=5)
    np.savez(tmp_path / "x.npz", x=x)
    by_folder = predict(model_folder, [tmp_path / "x.npz"], capsys)
    assert by_folder == predict(model_folder / "model.keras", [tmp_path / "x.npz"], capsys)
    assert [row[1] for row in by_folder] == [str(label) for label in y]
    # A model file with its manifest beside it (as `export --out m.keras` writes), renamed.
    shutil.copy(model_folder / "model.keras", tmp_path / "m.keras")
    shutil.copy(model_folder / "manifest.json", tmp_path / "m.keras.manifest.json")
    assert predict(tmp_path / "m.keras", [tmp_path / "x.npz"], capsys) == by_folder


def test_manifest_preprocessing_handles_digits_pngs_and_arrays(tmp_path):
    """A model tuned on 8x8 digits (counts 0..16): a 28x28 PNG and an 8x8 array both fit."""
    from autodl.predict import load_arrays, load_image

    manifest = {
        "input": {"shape": [8, 8, 1]},
        "preprocessing": {"kind": "image", "height": 8, "width": 8, "channels": 1,
                          "color_mode": "L", "pixel_scale": 1 / 255, "pixel_offset": 0.0,
                          "array_scale": 1 / 16},
    }
    digit = np.zeros((28, 28), dtype="uint8")
    digit[4:24, 12:16] = 255  # a white "1" on black, as MNIST and the digits draw them
    Image.fromarray(digit).convert("RGB").save(tmp_path / "one.png")
    x = load_image(tmp_path / "one.png", manifest["preprocessing"])
    assert x.shape == (8, 8, 1) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    # The stroke stays in the middle columns, blurred by the downscaling, not elsewhere.
    assert x[2:6, 3:5].min() > 0.3 and x[:, :2].max() == 0 and x[:, 6:].max() == 0
    counts = np.full((8, 8), 16.0)  # sklearn's load_digits().images[i]
    np.save(tmp_path / "one.npy", counts)
    arrays = load_arrays(tmp_path / "one.npy", manifest)
    assert arrays.shape == (1, 8, 8, 1) and np.allclose(arrays, 1.0)


@pytest.mark.parametrize("case", ["unreadable image", "missing file", "not an export",
                                  "a file not exported", "another file of the export",
                                  "no export", "wrong array shape", "no x array"])
def test_bad_input_one_line_exit_2(case, model_folder, tmp_path, capsys):
    model, files = model_folder, []
    if case == "unreadable image":
        files.append(tmp_path / "broken.png")
        files[-1].write_bytes(b"\x89PNG not really")
        message = "cannot read image"
    elif case == "missing file":
        files.append(tmp_path / "gone.png")
        message = "file not found"
    elif case == "not an export":
        model, message = tmp_path, "is not an autodl export"
        files.append(tmp_path / "x.npz")
        np.savez(files[-1], x=np.zeros((1, 8, 8, 1)))
    elif case == "a file not exported":
        model = tmp_path / "mine.keras"
        model.write_bytes(b"a model of mine")
        message = (f"{model} is not an autodl export (no mine.keras.manifest.json beside it, "
                   "nor manifest.json in its folder)")
    elif case == "another file of the export":
        model = tmp_path / "export" / "notes.txt"
        shutil.copytree(model_folder, model.parent)
        model.write_text("notes")
        message = f"{model} is not the model of the export in {model.parent} (that is model.keras)"
    elif case == "no export":
        model, message = tmp_path / "nowhere", "export not found:"
    elif case == "wrong array shape":
        files.append(tmp_path / "x.npz")
        np.savez(files[-1], x=np.zeros((2, 28, 28)))
        message = "expected numbers of shape 8x8x1 or N x 8x8x1, got float64 2x28x28"
    else:
        files.append(tmp_path / "x.npz")
        np.savez(files[-1], a=np.zeros((1, 8, 8)), b=np.zeros(1))
        message = "has no array named x (it has a, b)"
    files = files or [tmp_path / "any.png"]  # the export is opened first
    capsys.readouterr()
    assert main(["predict", str(model), *map(str, files)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("autodl: error: ") and captured.err.count("\n") == 1
    assert message in captured.err
