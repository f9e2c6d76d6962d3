"""Shared fixtures: tiny datasets, a tiny finished study, the real data in ../shared."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

if TYPE_CHECKING:
    import optuna

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


def ctrl_c_reaches_it() -> None:
    """``preexec_fn`` of a child sent SIGINT: the tests may run in a shell's background
    job, whose children inherit SIGINT ignored (and Python then keeps it ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid``, from the process table (Linux)."""
    try:
        return [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
                for child in (task / "children").read_text().split()]
    except FileNotFoundError:  # it ended, or one of its threads did: ask again
        return children_of(pid) if Path(f"/proc/{pid}").exists() else []


def validation_labels(examples: int, classes: int = 10) -> np.ndarray:
    """Balanced class indices of a validation set, as pruner factories take them."""
    return np.arange(examples) % classes


def tune_args(dataset: str, *extra: str, arch: str = "mlp", trials: int = 3) -> list[str]:
    """``autodl tune`` arguments for a fast study on a tiny dataset."""
    return ["tune", "--arch", arch, "--dataset", dataset, "--trials", str(trials),
            "--epochs", "2", "--seed", "1", *extra]


def add_completed_trial(study: optuna.Study, values: list[float],
                        val_loss: float | None) -> None:
    """Add a completed trial whose best epoch, its second, had ``val_loss`` (None: not logged)."""
    import optuna

    from autodl.storage import TrialAttr

    best = {"epoch": 2, "val_accuracy": values[0]}
    if val_loss is not None:
        best["val_loss"] = val_loss
    history = [{"epoch": 1, "val_accuracy": values[0] - 0.1, "val_loss": 0.001}, best]
    study.add_trial(optuna.trial.create_trial(values=values, user_attrs={
        TrialAttr.HISTORY: history, TrialAttr.BEST_EPOCH: 2}))


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
        # The space these fixtures' trials were drawn from (the defaults before 2026-12-04),
        # named so that they stay what the tests expect: one weak trial, one not the best.
        assert main(tune_args("npz:tiny.npz", "--study", "tiny", "--pruner", "none",
                              "--set", "learning_rate={low=1e-5, high=1e-1, log=true}",
                              "--set", "optimizer=[adam,sgd,rmsprop,adagrad]")) == 0
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


@pytest.fixture(scope="session")
def front_study(tiny_study, tmp_path_factory):
    """The tiny study's trials again, in a study of accuracy against latency, untrained.

    Its trials keep their stored models and hyperparameters; latencies are made up so that
    the trials with a model make the Pareto front, the most accurate of them 1.69 MB. It
    also has a dominated trial without a model, a trial pruned after one epoch and one
    pruned before training by ``--max-latency``; only the most accurate front model's test
    accuracy is recorded. Returns ``(storage_url, name)``.
    """
    import warnings

    import optuna

    from autodl import storage
    from autodl.storage import TrialAttr

    folder, tiny_url, name = tiny_study
    tiny = optuna.load_study(study_name=name, storage=tiny_url)
    url = f"sqlite:///{tmp_path_factory.mktemp('front')}/front.db"
    study = optuna.create_study(study_name="front", storage=url,
                                directions=["maximize", "minimize"])
    facts = tiny.user_attrs[storage.FACTS_KEY]
    study.set_user_attr(storage.FACTS_KEY, {
        **facts, "dataset": f"npz:{folder / 'tiny.npz'}", "objectives": ["accuracy", "latency"],
        "limits": {"latency": 50.0}})
    with warnings.catch_warnings():  # Optuna calls it experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["val_accuracy", "latency_ms"])
    kept = sorted((t for t in tiny.trials if TrialAttr.MODEL_ARTIFACT in t.user_attrs),
                  key=storage.accuracy_rank, reverse=True)
    # Faster the less accurate, tied accuracies tied in latency: every kept trial is on
    # the front, kept[-1] first (``storage.pareto_front``).
    accuracies = sorted({t.value for t in kept})
    latency = {t.number: 1.0 + accuracies.index(t.value) for t in kept}
    first = tiny.trials[0]
    without_model = {k: v for k, v in first.user_attrs.items() if k != TrialAttr.MODEL_ARTIFACT}

    def add(accuracy, latency_ms, attrs, source=first, size=48_200):
        """A trial of these values; pruned where it has no accuracy."""
        deployment = {TrialAttr.SIZE_BYTES: size, TrialAttr.LATENCY_MS: latency_ms,
                      TrialAttr.LATENCY_RUNTIME: "litert 2.0, 1 thread"}
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState.PRUNED if accuracy is None else
            optuna.trial.TrialState.COMPLETE,
            values=None if accuracy is None else [accuracy, latency_ms],
            params=source.params, distributions=source.distributions,
            user_attrs={**attrs, **deployment}))

    for trial in tiny.trials:  # without intermediate values: multi-objective trials have none
        add(trial.value, latency.get(trial.number, 100.0), trial.user_attrs, trial,
            1_690_000 if trial.number == kept[-1].number else 48_200)
    add(0.0, 200.0, without_model)
    add(None, 20.0, {**without_model, TrialAttr.STOPPED_EPOCH: 1,
                     TrialAttr.HISTORY: first.user_attrs[TrialAttr.HISTORY][:1]})
    add(None, 70.0, {TrialAttr.STOPPED_EPOCH: 0,
                     TrialAttr.PRUNED_BECAUSE: "over --max-latency 50: 70 ms"})
    storage.record_front_test(study, {kept[-1].number: 0.875})
    return url, "front"
