"""Trial checkpoints: a lost trial resumes where it was, as if it had never stopped."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import optuna
import pandas as pd
import pytest
from conftest import ctrl_c_reaches_it, tune_args, write_plugin

from autodl.browse import trials_frame
from autodl.checkpoint import Checkpoint, Checkpointer, CheckpointStore, CheckpointUnusable
from autodl.cli import main
from autodl.recipe import EarlyStopping

STORAGE = "sqlite:///studies/autodl.db"
EPOCHS = 6
#: Training steps per epoch of the tiny data (86 examples, batches of 32).
STEPS = 3

#: A plugin whose model counts its training steps and, once armed with the file
#: ``armed``, does ``{action}`` at the 2nd step of epoch 3 (epochs 1 and 2 checkpointed).
#: The count runs in the training graph as a side effect: the numbers are untouched.
PLUGIN = f'''
import multiprocessing, os, signal, time
from pathlib import Path

import keras
import tensorflow as tf

steps = [0]


def count():
    steps[0] += 1
    armed = Path("armed")
    if steps[0] == {2 * STEPS + 2} and armed.exists():
        armed.unlink()
        {{action}}
    return 0


@keras.saving.register_keras_serializable("autodl_tests")
class Tripwire(keras.layers.Layer):
    def call(self, x, training=None):
        if training:
            tf.py_function(count, [], tf.int32)
        return x


def build(hp, input_shape, num_classes):
    inputs = keras.Input(input_shape)
    x = Tripwire()(keras.layers.Flatten()(inputs))
    x = keras.layers.Dense(hp.Int("units", 4, 16), activation="relu")(x)
    x = keras.layers.Dropout(0.3)(x)  # its random state must resume too
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))
'''

#: One trial, unpruned, every epoch trained, with a plateau reducer whose state matters.
ARGS = ("--epochs", str(EPOCHS), "--patience", "10", "--pruner", "none", "--set", "units=8",
        "--set", "batch_size=32", "--set", "lr_plateau=true", "--set", "lr_plateau_patience=1",
        "--heartbeat", "1")


def plugin(folder: Path, action: str = "pass", armed: bool = True) -> Path:
    return write_plugin(folder, PLUGIN, action, armed)


def args(folder: Path, dataset: Path, study: str) -> list[str]:
    return tune_args(f"npz:{dataset}", "--study", study, *ARGS, arch=str(folder / "plugin.py"),
                     trials=1)


def trials(study: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study, storage=STORAGE).get_trials()


def numbers(history: list[dict]) -> list[dict]:
    """A history without its timings."""
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


def checkpoints(folder: Path, study: str) -> list[Path]:
    return sorted((folder / "studies" / "artifacts" / "checkpoints" / study).glob("*"))


@pytest.fixture
def uninterrupted(in_tmp, tiny_npz) -> optuna.trial.FrozenTrial:
    """The trial as it runs without interruption."""
    plugin(in_tmp, armed=False)
    assert main(args(in_tmp, tiny_npz, "whole")) == 0
    (trial,) = trials("whole")
    assert trial.state.name == "COMPLETE" and len(trial.user_attrs["history"]) == EPOCHS
    return trial


def assert_same_trial(resumed: optuna.trial.FrozenTrial,
                      whole: optuna.trial.FrozenTrial) -> None:
    """Exactly equal: on a CPU, with the same seed, every operation repeats bit for bit."""
    assert numbers(resumed.user_attrs["history"]) == numbers(whole.user_attrs["history"])
    assert resumed.intermediate_values == whole.intermediate_values
    assert resumed.value == whole.value and resumed.params == whole.params


def test_a_trial_whose_worker_died_resumes_as_if_it_never_stopped(uninterrupted, in_tmp,
                                                                  tiny_npz, capsys):
    plugin(in_tmp, "os.kill(os.getpid(), signal.SIGKILL)")
    assert main(args(in_tmp, tiny_npz, "killed")) == 0
    lost, resumed = trials("killed")
    assert lost.state.name == "FAIL" and lost.user_attrs["fail_kind"] == "crashed"
    assert sorted(lost.intermediate_values) == [1, 2]  # killed in epoch 3
    assert resumed.user_attrs["resumes_trial"] == 0
    assert resumed.user_attrs["resumed_from_epoch"] == 2
    assert_same_trial(resumed, uninterrupted)
    assert "trial    1 resumed at epoch 2 (the checkpoint of trial 0)" in capsys.readouterr().out
    assert checkpoints(in_tmp, "killed") == []  # gone with the trial's end
    frame = trials_frame(optuna.load_study(study_name="killed", storage=STORAGE))
    assert frame[["resumes_trial", "resumed_from_epoch"]].astype(object).values.tolist() == [
        [pd.NA, pd.NA], [0, 2]]


def run_killed(folder: Path, dataset: Path, study: str, action: str) -> None:
    """``autodl tune`` in a process of its own, stopped by the plugin's ``action``."""
    plugin(folder, action)
    process = subprocess.run([sys.executable, "-m", "autodl", *args(folder, dataset, study)],
                             cwd=folder, capture_output=True, text=True, timeout=300,
                             preexec_fn=ctrl_c_reaches_it)
    assert process.returncode != 0


#: The worker's supervisor: `autodl tune` (the worker's parent is the fork server).
SUPERVISOR = "multiprocessing.parent_process().pid"
KILL_ALL = f"os.kill({SUPERVISOR}, signal.SIGKILL); os.kill(os.getpid(), signal.SIGKILL)"


def test_the_next_run_resumes_at_once_a_trial_whose_run_was_killed(uninterrupted, in_tmp,
                                                                   tiny_npz, capsys):
    run_killed(in_tmp, tiny_npz, "preempted", KILL_ALL)  # `kill -9`, a restarted machine
    (lost,) = trials("preempted")
    assert lost.state.name == "RUNNING" and len(checkpoints(in_tmp, "preempted")) == 1
    # Its process on this machine is gone: no need to wait for its heartbeat.
    assert main(args(in_tmp, tiny_npz, "preempted")) == 0
    lost, resumed = trials("preempted")
    assert lost.state.name == "FAIL" and "is gone" in lost.user_attrs["fail_reason"]
    assert resumed.user_attrs["resumed_from_epoch"] == 2
    assert_same_trial(resumed, uninterrupted)
    out = capsys.readouterr().out
    assert "trial    0 FAIL     val_acc   -     epochs   2       -  crashed: its process (" in out
    assert "trial    1 resumed at epoch 2 (the checkpoint of trial 0)" in out


def test_the_next_run_resumes_a_trial_stopped_by_ctrl_c(uninterrupted, in_tmp, tiny_npz):
    # The step Ctrl-C lands in lasts until the supervisor has passed it on: the tiny
    # trial's last epochs take a tenth of a second, and a supervisor that took longer to
    # pass it on found the trial already complete (2 full-suite runs of 4).
    run_killed(in_tmp, tiny_npz, "ctrl-c",
               f"os.kill({SUPERVISOR}, signal.SIGINT); time.sleep(3)")
    (interrupted,) = trials("ctrl-c")
    assert interrupted.user_attrs["fail_kind"] == "interrupted"
    assert sorted(interrupted.intermediate_values) == [1, 2]  # stopped in epoch 3
    assert len(checkpoints(in_tmp, "ctrl-c")) == 1  # kept for the next run
    assert main(args(in_tmp, tiny_npz, "ctrl-c")) == 0
    interrupted, resumed = trials("ctrl-c")
    assert resumed.user_attrs["resumed_from_epoch"] == 2
    assert_same_trial(resumed, uninterrupted)
    assert checkpoints(in_tmp, "ctrl-c") == []


def as_if_run_elsewhere(study: str) -> None:
    """Make the study's running trial another machine's: only its heartbeat tells it is lost."""
    storage = optuna.storages.RDBStorage(STORAGE)
    trial_id = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(study), 0)
    storage.set_trial_user_attr(trial_id, "process", "elsewhere:1:1")


def test_a_truncated_checkpoint_is_ignored_with_one_warning(uninterrupted, in_tmp, tiny_npz,
                                                            capsys):
    run_killed(in_tmp, tiny_npz, "torn", KILL_ALL)
    (path,) = checkpoints(in_tmp, "torn")
    path.write_bytes(path.read_bytes()[:300])  # as if the disk filled while writing
    as_if_run_elsewhere("torn")
    time.sleep(2.5)  # its heartbeat is stale after twice `--heartbeat 1`
    assert main(args(in_tmp, tiny_npz, "torn")) == 0
    lost, retried = trials("torn")
    assert lost.state.name == "FAIL" and "fail_reason" not in lost.user_attrs  # heartbeat
    assert retried.user_attrs["resumed_from_epoch"] == 0
    # From scratch, seeded as the lost trial was: the same trial all the same.
    assert_same_trial(retried, uninterrupted)
    warnings = [line for line in capsys.readouterr().out.splitlines() if "warning" in line]
    assert len(warnings) == 1
    assert warnings[0].startswith("warning: trial 1: the checkpoint of trial 0 cannot be "
                                  "resumed (")


def test_checkpoints_of_trials_that_cannot_resume_are_removed_by_the_next_run(
        in_tmp, tiny_npz):
    plugin(in_tmp, armed=False)
    stray = in_tmp / "studies" / "artifacts" / "checkpoints" / "clean" / "trial-7.npz"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"left by a trial that is gone")
    assert main(args(in_tmp, tiny_npz, "clean")) == 0
    assert checkpoints(in_tmp, "clean") == []


def test_checkpoint_every_0_writes_none(in_tmp, tiny_npz, capsys):
    plugin(in_tmp, "os.kill(os.getpid(), signal.SIGKILL)")
    assert main([*args(in_tmp, tiny_npz, "none"), "--checkpoint-every", "0"]) == 0
    lost, retried = trials("none")
    assert lost.state.name == "FAIL" and retried.user_attrs["resumed_from_epoch"] == 0
    assert len(retried.user_attrs["history"]) == EPOCHS
    assert "trial    1 retries trial 0 from epoch 0" in capsys.readouterr().out


def small_model() -> keras.Model:
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model


def test_a_checkpoint_round_trips_and_refuses_another_model(tmp_path):
    store = CheckpointStore(tmp_path / "checkpoints")
    model = small_model()
    stopper = EarlyStopping("val_accuracy", patience=3)
    stopper.wait, stopper.best, stopper.best_epoch, stopper.stopped_epoch = 1, 0.5, 0, 0
    stopper.best_loss = 0.25
    saved = Checkpoint.capture(model, [stopper], 2, [{"epoch": 1}, {"epoch": 2}], 9)
    store.save(4, saved)
    assert store.series() == [4] and store.epoch(4) == 2
    loaded = store.load(4)
    assert loaded.history == saved.history and loaded.data_seed == 9
    assert loaded.callbacks == [{"wait": 1, "stopped_epoch": 0, "best": 0.5, "best_epoch": 0,
                                 "best_loss": 0.25}]
    for a, b in zip(loaded.model + loaded.optimizer, saved.model + saved.optimizer, strict=True):
        np.testing.assert_array_equal(a, b)
    loaded.check_fits(small_model())
    wider = keras.Sequential([keras.Input((3,)), keras.layers.Dense(5)])
    wider.compile(optimizer="adam", loss="mse")
    wider.optimizer.build(wider.trainable_variables)
    with pytest.raises(CheckpointUnusable, match="model variables are not this model's"):
        loaded.check_fits(wider)
    store.delete(4)
    assert store.load(4) is None and store.series() == []


def test_a_damaged_checkpoint_file_is_unusable_not_a_crash(tmp_path):
    store = CheckpointStore(tmp_path)
    store.save(1, Checkpoint.capture(small_model(), [], 1, [], 0))
    whole = store.path(1).read_bytes()
    store.path(1).write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CheckpointUnusable):
        store.load(1)
    assert store.epoch(1) == 0
    store.path(1).write_bytes(b"")
    with pytest.raises(CheckpointUnusable):
        store.load(1)


def test_a_write_cut_short_leaves_the_last_checkpoint_whole(tmp_path, monkeypatch):
    store = CheckpointStore(tmp_path)
    store.save(1, Checkpoint.capture(small_model(), [], 1, [{"epoch": 1}], 0))

    def torn(file, **arrays):
        file.write(b"PK\x03\x04 half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", torn)
    with pytest.raises(OSError):
        store.save(1, Checkpoint.capture(small_model(), [], 2, [], 0))
    assert store.epoch(1) == 1
    assert [path.name for path in tmp_path.iterdir()] == ["trial-1.npz"]  # no partial left


class RecordingStore(CheckpointStore):
    """Notes the epoch of every checkpoint written."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.written: list[int] = []

    def save(self, series: int, checkpoint: Checkpoint) -> None:
        self.written.append(checkpoint.epoch)
        super().save(series, checkpoint)


@pytest.mark.parametrize(("every", "written"), [(1, [1, 2, 3]), (2, [2]), (0, [])])
def test_checkpoints_are_due_every_n_epochs_but_not_after_the_last(tmp_path, every, written):
    model, store = small_model(), RecordingStore(tmp_path)
    history: list[dict] = []
    model.fit(np.zeros((8, 3)), np.zeros((8, 2)), epochs=4, verbose=0,
              callbacks=[Checkpointer(store, 0, every, 0, history, [])])
    assert store.written == written
