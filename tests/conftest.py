"""Shared fixtures: tiny datasets, a tiny finished study, the real data in ../shared."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The real data beside the checkout (MNIST IDX, MobileNetV2 weights, flower photos)."""
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATASETS}")
    return SHARED_DATASETS


def make_images(n: int, shape=(8, 8, 1), classes: int = 3, seed: int = 0):
    """Easy, learnable images: each class lights up its own horizontal band, plus noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.uniform(0, 0.3, size=(n, *shape)).astype("float32")
    band = shape[0] // classes
    for label in range(classes):
        x[y == label, label * band:(label + 1) * band] += 0.7
    return x, y


@pytest.fixture
def tiny_npz(tmp_path: Path) -> Path:
    """An npz dataset of 120 learnable 8x8x1 images in 3 classes, without a test split."""
    x, y = make_images(120)
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=x, y_train=y)
    return path


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty folder, so the default storage lands in tmp_path/studies."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_plugin(folder: Path, template: str, action: str = "pass",
                 armed: bool = False) -> Path:
    """Write ``folder/plugin.py`` from a template with an ``{action}`` it does once armed.

    Armed means the file ``armed`` exists; the plugin removes it when it acts.
    """
    path = folder / "plugin.py"
    path.write_text(template.format(action=action), encoding="utf-8")
    if armed:
        (folder / "armed").touch()
    return path


def tune_args(dataset: str, *extra: str, arch: str = "mlp", trials: int = 3) -> list[str]:
    """``autodl tune`` arguments for a fast study on a tiny dataset."""
    return ["tune", "--arch", arch, "--dataset", dataset, "--trials", str(trials),
            "--epochs", "2", "--seed", "1", *extra]


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory: pytest.TempPathFactory):
    """A finished 3-trial mlp study on a tiny npz dataset: ``(folder, storage_url, name)``."""
    from autodl.cli import main

    folder = tmp_path_factory.mktemp("study")
    x, y = make_images(120)
    np.savez(folder / "tiny.npz", x_train=x, y_train=y)
    cwd = Path.cwd()
    os.chdir(folder)
    try:
        assert main(tune_args("npz:tiny.npz", "--study", "tiny", "--pruner", "none")) == 0
    finally:
        os.chdir(cwd)
    return folder, f"sqlite:///{folder}/studies/autodl.db", "tiny"


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No network: any connection or name lookup fails at once (a download cannot hang)."""

    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture
def empty_keras_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Keras home, for autodl (KERAS_HOME) and for Keras, which reads it at import."""
    home = tmp_path / "keras_home"
    home.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(home))
    from keras.src.backend import config as keras_config

    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(home))
    return home
