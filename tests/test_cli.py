"""End-to-end runs of `autodl tune` as a user runs it, checked through Optuna's own API."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import optuna
import pytest
from conftest import REPO, children_of, ctrl_c_reaches_it, make_images, tune_args

from autodl import cli, config
from autodl.cli import build_parser, main
from autodl.config import DEFAULT_STORAGE
from autodl.objectives import OBJECTIVES
from autodl.pruners import PRUNERS
from autodl.samplers import SAMPLERS
from autodl.storage import most_accurate_trial
from autodl.tuner import TuneSummary

STORAGE = "sqlite:///studies/autodl.db"


def load(name: str, storage: str = STORAGE) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=storage)


def states(study: optuna.Study) -> list[str]:
    return [t.state.name for t in study.trials]


def test_tiny_study_end_to_end(tiny_study):
    import keras

    folder, storage, name = tiny_study
    study = load(name, storage)
    assert states(study) == ["COMPLETE"] * 3
    facts = study.user_attrs["autodl"]
    assert facts["arch"] == "mlp" and facts["dataset"] == "npz:tiny.npz" and facts["epochs"] == 2
    for trial in study.trials:
        history = trial.user_attrs["history"]
        assert [h["epoch"] for h in history] == list(range(1, len(history) + 1))
        assert {"loss", "accuracy", "val_loss", "val_accuracy", "seconds"} <= set(history[0])
        assert trial.value == max(h["val_accuracy"] for h in history)
        assert trial.user_attrs["params_count"] > 0
        assert trial.user_attrs["stopped_epoch"] == len(history)
        assert trial.intermediate_values == {h["epoch"]: h["val_accuracy"] for h in history}
        # Every value the model was built with, the core's training ones included.
        assert {"learning_rate", "batch_size", "optimizer", "depth", "units"} <= set(
            trial.user_attrs["hyperparameters"]
        )
    test, best = study.user_attrs["test"], most_accurate_trial(study)
    assert test["trial"] == best.number and 0.0 <= test["accuracy"] <= 1.0

    model = keras.models.load_model(folder / "studies" / "models" / "tiny.keras")
    x, _ = make_images(5)
    probabilities = model.predict(x, verbose=0)
    assert probabilities.shape == (5, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    # The best model is also an artifact of its trial, as optuna-dashboard shows it.
    artifact_id = best.user_attrs["model_artifact_id"]
    assert (folder / "studies" / "artifacts" / artifact_id).is_file()


def test_of_trials_tied_in_accuracy_the_run_hands_back_the_one_of_lowest_loss(in_tmp, tiny_npz,
                                                                              capsys):
    # A good learning rate, fixed: every trial gets the tiny validation set all right.
    assert main(tune_args(f"npz:{tiny_npz}", "--study", "ties", "--pruner", "none",
                          "--set", "learning_rate=0.01", "--set", "optimizer=adam")) == 0
    study = load("ties")
    assert [t.value for t in study.trials] == [1.0] * 3
    loss = {t.number: t.user_attrs["history"][t.user_attrs["best_epoch"] - 1]["val_loss"]
            for t in study.trials}
    best = min(loss, key=loss.get)
    assert best != study.best_trial.number  # Optuna's: the first to finish
    assert study.user_attrs["test"]["trial"] == best
    assert re.search(rf"best trial +#{best}\n", capsys.readouterr().out)


def test_summary_names_best_model_and_browse_command(in_tmp, tiny_npz, capsys):
    assert main(tune_args(f"npz:{tiny_npz}", "--study", "s", trials=1)) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "trial    0 COMPLETE" in out
    assert "\x1b" not in out + captured.err  # not a terminal: no status line
    assert "test accuracy" in out and "best trial" in out
    assert "Model:  studies/models/s.keras" in out
    assert "Browse: autodl dashboard   (or: autodl report s --out DIR)" in out


def test_rerun_tops_up_and_keeps_finished_trials(in_tmp, tiny_npz, capsys):
    assert main(tune_args(f"npz:{tiny_npz}", "--study", "s", trials=2)) == 0
    before = {t.number: (t.state, t.value, t.params) for t in load("s").trials}
    assert main(tune_args(f"npz:{tiny_npz}", "--study", "s", trials=3)) == 0
    after = load("s").trials
    assert len(after) == 3
    assert {t.number: (t.state, t.value, t.params) for t in after[:2]} == before
    assert "2 of 3 trials finished, running 1 more" in capsys.readouterr().out
    # Asking for what is already there runs nothing.
    assert main(tune_args(f"npz:{tiny_npz}", "--study", "s", trials=3)) == 0
    assert len(load("s").trials) == 3


PLUGIN = '''
import keras


def build(hp, input_shape, num_classes):
    """Good or (one time in three) hopeless model: a frozen zero output cannot learn."""
    good = hp.Int("quality", 0, 2, default=1) > 0
    inputs = keras.Input(input_shape)
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(16, activation="relu")(x)
    init = keras.initializers.Constant(float("nan")) if hp.Boolean("explode") else "glorot_uniform"
    out = keras.layers.Dense(num_classes, activation="softmax", kernel_initializer=init,
                             trainable=good)
    if not good:
        out = keras.layers.Dense(num_classes, activation="softmax", kernel_initializer="zeros",
                                 trainable=False)
    return keras.Model(inputs, out(x))
'''


@pytest.fixture
def plugin_file(in_tmp) -> Path:
    path = in_tmp / "quality.py"
    path.write_text(textwrap.dedent(PLUGIN))
    return path


def test_pruner_stops_hopeless_trials_early(plugin_file, tiny_npz):
    args = tune_args(f"npz:{tiny_npz}", "--study", "p", "--pruner", "median", "--sampler",
                     "random", "--epochs", "4", "--patience", "4", "--set", "learning_rate=0.01",
                     "--set", "optimizer=adam", "--set", "explode=false",
                     arch=str(plugin_file), trials=12)
    assert main(args) == 0
    study = load("p")
    # Once the median pruner has its five startup trials, every hopeless one is stopped.
    hopeless = [t for t in study.trials[5:] if t.params.get("quality") == 0]
    assert hopeless and all(t.state.name == "PRUNED" for t in hopeless), states(study)
    for trial in (t for t in study.trials if t.state.name == "PRUNED"):
        assert trial.user_attrs["stopped_epoch"] < 4
        assert len(trial.intermediate_values) == trial.user_attrs["stopped_epoch"]
    assert len([t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]) == 12


def test_three_failures_in_a_row_stop_the_study(plugin_file, tiny_npz, capsys):
    args = tune_args(f"npz:{tiny_npz}", "--study", "x", "--set", "explode=true",
                     "--set", "quality=1", arch=str(plugin_file), trials=10)
    assert main(args) == 0
    study = load("x")
    assert states(study) == ["FAIL"] * 3
    out = capsys.readouterr().out
    assert "stopped after 3 failed trials in a row (diverged)" in out
    assert "No trial completed" in out


def _db_digest(folder: Path) -> str:
    """A digest of the database's contents (with write-ahead logging the main file's
    bytes change when the log is checkpointed, though nothing was written)."""
    import sqlite3

    with sqlite3.connect(folder / "studies" / "autodl.db") as connection:
        dump = "\n".join(connection.iterdump())
    return hashlib.sha256(dump.encode()).hexdigest()


BAD_INPUTS = [
    (["--arch", "nope"], "unknown arch 'nope'; choose from cnn, mlp, mobilenetv2"),
    (["--dataset", "nope"], "unknown dataset 'nope'; choose from digits"),
    (["--sampler", "nope"], f"unknown sampler 'nope'; choose from {', '.join(SAMPLERS)}"),
    (["--pruner", "nope"], f"unknown pruner 'nope'; choose from {', '.join(PRUNERS)}"),
    (["--trials", "0"], "--trials must be at least 1"),
    (["--trials", "-3"], "--trials must be at least 1"),
    (["--trials", "many"], "argument --trials: invalid int value"),
    (["--space", "missing.toml"], "space file not found: missing.toml"),
    (["--set", "depth={low=5, high=2}"], "depth: low (5) is greater than high (2)"),
    (["--set", "depth=30"], "depth=30 is not allowed: depth takes int 1..6"),
    (["--set", "colour=3"], "unknown hyperparameter colour for arch mlp; known:"),
    (["--set", "optimizer=adamw"], "optimizer='adamw' is not allowed: optimizer takes one of"),
    (["--storage", "nonsense"], "malformed storage URL 'nonsense'"),
    (["--storage", "sqlite:///no/such/folder/x.db"], "storage folder does not exist"),
    (["--storage", "postgresql://u@127.0.0.1:1/db"], "cannot open storage"),
    (["--dataset", "images:nowhere"], "image folder not found: nowhere"),
    (["--dataset", "idx:."], "no IDX images/labels pair in ."),
    (["--dataset", "npz:none.npz"], "npz file not found: none.npz"),
    (["--study", "../escape"], "bad study name '../escape'"),
    (["--weights", "none"], "--weights does not apply to arch mlp"),
    (["--checkpoint-every", "-1"], "--checkpoint-every must be 0 (no checkpoints) or more"),
    (["--checkpoint-every", "often"], "argument --checkpoint-every: invalid int value"),
    (["--objective", "accuracy,speed"], "unknown objective 'speed'; choose from accuracy, "),
    (["--objective", "accuracy,latency", "--objective", "latency"],
     "--objective names latency twice"),
    (["--objective", "latency"], "--objective latency leaves out accuracy"),
    (["--max-latency", "0"], "--max-latency must be more than zero (ms), got 0.0"),
    (["--max-size", "-1"], "--max-size must be more than zero (MB), got -1.0"),
    (["--max-params", "lots"], "argument --max-params: invalid float value"),
    (["--objective", "accuracy,size", "--sampler", "cmaes"], "--sampler cmaes searches one "),
    (["--objective", "accuracy,params", "--pruner", "hyperband"],
     "--pruner hyperband judges one objective"),
    (["--pruner", "pareto"], "--pruner pareto is for several objectives"),
]


@pytest.mark.parametrize(("extra", "message"), BAD_INPUTS, ids=[m for _, m in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(in_tmp, capsys, extra, message):
    args = ["tune", "--arch", "mlp", "--dataset", "digits", "--trials", "1", *extra]
    if "--arch" in extra:
        args = ["tune", "--dataset", "digits", *extra]
    assert_refused(args, message, capsys)
    assert not (in_tmp / "studies").exists()


def run_main(args: list[str]) -> int:
    """``main``'s exit code, also when argparse exits."""
    try:
        return main(args)
    except SystemExit as exit:
        return exit.code


def assert_refused(args: list[str], message: str, capsys) -> None:
    code = run_main(args)
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], captured.err
    assert "Traceback" not in captured.err


def test_bad_space_file(in_tmp, capsys):
    (in_tmp / "bad.toml").write_text("[space]\nlearning_rate = {low = 1, high =\n")
    assert_refused(["tune", "--arch", "mlp", "--space", "bad.toml"], "bad.toml is not valid TOML",
                   capsys)
    (in_tmp / "odd.toml").write_text("[space]\nlearning_rate = {low = 1e-3, hi = 1}\n")
    assert_refused(["tune", "--arch", "mlp", "--space", "odd.toml"],
                   "learning_rate: a range needs low and high", capsys)
    assert not (in_tmp / "studies").exists()


def test_other_arch_on_existing_study_is_refused_and_db_untouched(in_tmp, tiny_npz, capsys):
    assert main(tune_args(f"npz:{tiny_npz}", "--study", "s", trials=1)) == 0
    capsys.readouterr()
    digest = _db_digest(in_tmp)
    assert_refused(tune_args(f"npz:{tiny_npz}", "--study", "s", arch="cnn", trials=2),
                   "study 's' was run with arch 'mlp', not 'cnn'", capsys)
    assert _db_digest(in_tmp) == digest


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback(in_tmp, where):
    command = ["tune", "--arch", "nope"]
    args = ["--debug", *command] if where == "before" else [*command, "--debug"]
    result = subprocess.run([sys.executable, "-m", "autodl", *args],
                            capture_output=True, text=True, cwd=in_tmp)
    assert result.returncode != 0 and "Traceback" in result.stderr


@pytest.mark.parametrize("command", [c.name for c in cli.COMMANDS])
def test_debug_before_or_after_any_command(command):
    given = {"tune": [], "plugins": [], "studies": [], "show": ["s"], "dashboard": [],
             "export": ["s", "--out", "m"], "predict": ["m", "x.png"],
             "report": ["s", "--out", "r"]}
    args = [command, *given[command]]
    parse = build_parser().parse_args
    assert parse(args).debug is False
    assert parse(["--debug", *args]).debug is True
    assert parse([*args, "--debug"]).debug is True
    assert parse(["--debug", *args, "--debug"]).debug is True


def test_shared_options_are_declared_once_and_keep_their_defaults():
    source = Path(cli.__file__).read_text()
    for option in ("--debug", "--storage", "--csv", "--force"):
        assert source.count(f'"{option}"') == 1, option
    parse = build_parser().parse_args
    for command in ("studies", "dashboard"):
        assert parse([command]).storage == DEFAULT_STORAGE
        assert parse([command, "--storage", "sqlite:///x.db"]).storage == "sqlite:///x.db"
    assert parse(["tune"]).storage is None  # not given: the --space file's, else the default
    studies = parse(["studies", "--csv", "s.csv", "--force"])
    assert (studies.csv, studies.force) == ("s.csv", True)
    assert parse(["show", "s"]).force is False
    assert not hasattr(parse(["report", "s", "--out", "r"]), "csv")  # only where it is declared


def test_help_lists_the_choices_from_their_tables(capsys):
    from autodl.export import FORMATS

    for command in ("tune", "export"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([command, "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"--pruner PRUNER {'|'.join(PRUNERS)} (default: {next(iter(PRUNERS))})" in help_text
    assert ("--objective NAMES what to tune for, comma-separated or repeated: "
            f"{', '.join(OBJECTIVES)}") in help_text
    assert f"--sampler SAMPLER {'|'.join(SAMPLERS)} (default: {next(iter(SAMPLERS))})" in help_text
    for name, model_format in FORMATS.items():
        assert name in help_text.split("--format FORMAT", 1)[1]
        assert model_format.suffix in help_text.split("--out PATH", 1)[1]
    assert "the model file itself, with its manifest beside it as PATH.manifest.json" in help_text


def test_help_is_fast_and_imports_nothing_heavy():
    code = ("import sys, autodl.cli\n"
            "heavy = {'tensorflow', 'keras', 'keras_tuner', 'optuna', 'pandas', 'sklearn'}\n"
            "print(sorted(heavy & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=REPO, check=True)
    assert result.stdout.strip() == "[]"
    help_run = subprocess.run([sys.executable, "-m", "autodl", "tune", "--help"],
                              capture_output=True, text=True, check=True)
    assert "--arch" in help_run.stdout and "--pruner" in help_run.stdout


def test_weights_download_failure_says_what_to_fetch(in_tmp, capsys, monkeypatch):
    from urllib.error import URLError

    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(file_utils, "urlretrieve", offline)
    assert_refused(["tune", "--arch", "kt:HyperEfficientNet", "--dataset", "digits"],
                   "needs https://storage.googleapis.com/keras-applications/efficientnetb0_notop"
                   ".h5, which could not be downloaded (offline?)", capsys)
    assert not (in_tmp / "studies").exists()


def test_ctrl_c_fails_the_running_trial_prints_the_summary_and_exits_130(in_tmp, tiny_npz):
    import signal
    import time

    args = tune_args(f"npz:{tiny_npz}", "--study", "c", "--epochs", "500", "--patience", "500",
                     "--pruner", "none", trials=5)
    process = subprocess.Popen([sys.executable, "-m", "autodl", *args], cwd=in_tmp,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=ctrl_c_reaches_it)
    for line in process.stdout:  # wait until the study exists
        if line.startswith("Data:"):
            break
    while load("c").trials[0].state.name != "RUNNING":  # and its first trial trains
        time.sleep(0.5)
    time.sleep(2)

    # The fork server (and multiprocessing's resource tracker), and the worker it forked.
    grandchildren = [pid for child in children_of(process.pid) for pid in children_of(child)]
    assert grandchildren  # the worker, training
    children = children_of(process.pid) + grandchildren
    # Sent to autodl alone, as `kill -INT` does: it tells its workers itself.
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Stopped early: interrupted" in out
    assert "Run the same command again to continue the study." in out
    assert "Traceback" not in err
    trial = load("c").trials[-1]
    assert trial.state.name == "FAIL"
    assert trial.user_attrs["fail_reason"] == "interrupted: stopped by the user"

    def running(pid: str) -> bool:  # a zombie has ended; init reaps it soon
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    time.sleep(1)  # the fork server and resource tracker end when they see autodl gone
    assert not [pid for pid in children if running(pid)]


def test_the_guide_preset_runs_the_guides_network(in_tmp, tiny_npz):
    import tomllib

    preset = REPO / "examples" / "guide-mlp.toml"
    assert main(["tune", "--space", str(preset), "--trials", "1", "--dataset",
                 f"npz:{tiny_npz}", "--epochs", "1", "--seed", "1"]) == 0
    trial = load("mlp-npz").trials[0]
    assert trial.state.name == "COMPLETE"
    built = trial.user_attrs["hyperparameters"]
    assert {name: built[name] for name in tomllib.loads(preset.read_text())["space"]} == (
        tomllib.loads(preset.read_text())["space"])
    # 8x8 inputs through dense layers of 512 and 256 units into 3 classes
    assert trial.user_attrs["params_count"] == (64 * 512 + 512) + (512 * 256 + 256) + (256 * 3 + 3)
    assert load("mlp-npz").user_attrs["autodl"]["epochs"] == 1  # the command line wins


def test_tensorboard_and_mixed_precision_from_the_command_line(in_tmp, tiny_npz):
    import keras

    from autodl.runtime import training_device

    try:
        assert main(tune_args(f"npz:{tiny_npz}", "--study", "tb", "--tensorboard", "logs",
                              "--mixed-precision", trials=2)) == 0
    finally:
        keras.config.set_dtype_policy("float32")
    assert sorted(path.name for path in (in_tmp / "logs" / "tb").iterdir()) == [
        "trial-00000", "trial-00001"]
    study = load("tb")
    facts = study.user_attrs["autodl"]
    assert facts["mixed_precision"] is True and facts["tensorboard"] == str(in_tmp / "logs")
    assert study.trials[0].user_attrs["device"] == training_device()
    model = keras.models.load_model(in_tmp / "studies" / "models" / "tb.keras")
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert {layer.compute_dtype for layer in dense} == {"float16"}
    assert keras.backend.standardize_dtype(model.output.dtype) == "float32"


def test_plugin_listing_shows_when_a_training_hyperparameter_applies(capsys):
    assert main(["plugins", "mlp", "--input-shape", "8,8,1", "--classes", "3"]) == 0
    out = capsys.readouterr().out
    assert "lr_schedule          one of 'constant', 'exponential', 'step', 'cosine', 'cyclic'; " \
           "default fixed 'constant'" in out
    assert "lr_cycles            int 2..6 (only when lr_schedule is 'cyclic')" in out


@pytest.mark.parametrize(("budget", "message"), [
    ("0", "--budget must be more than zero, got '0'"),
    ("-5m", "--budget needs a duration like 90s, 10m or 1h30m, got '-5m'"),
    ("soon", "--budget needs a duration like 90s, 10m or 1h30m, got 'soon'"),
])
def test_bad_budget_is_one_line_and_writes_nothing(budget, message, in_tmp, capsys):
    assert_refused(["tune", "--arch", "mlp", f"--budget={budget}"], message, capsys)
    assert not (in_tmp / "studies").exists()


def test_budget_ends_the_study_with_its_best_model(in_tmp, tiny_npz, capsys):
    # No --trials: with a budget the trials go on until it ends (in the worker, too).
    code = run_main(["tune", "--arch", "mlp", "--dataset", f"npz:{tiny_npz}", "--epochs", "2",
                     "--seed", "1", "--budget", "20s"])
    out = capsys.readouterr().out
    assert code == 0
    assert "running more until the budget ends" in out
    assert re.search(r"^\d+ trials finished: ", out, re.M)
    assert "\nStopped: the time budget (20s) ran out" in out
    assert "test accuracy" in out


@pytest.mark.parametrize(("requested", "line"), [
    (30, "Stopped early: the time budget (1m) ran out"),  # before the 30 trials
    (None, "Stopped: the time budget (1m) ran out"),  # the budget was the run's end
])
def test_a_budget_stops_a_run_early_only_where_trials_were_asked_for(requested, line,
                                                                     capsys):
    cli._print_summary(TuneSummary(
        study_name="s", storage="sqlite:///s.db", artifact_dir="artifacts",
        requested=requested, counts={"COMPLETE": 0, "PRUNED": 4, "FAIL": 0},
        stop_reason="the time budget (1m) ran out"))
    out = capsys.readouterr().out.splitlines()
    assert out[1] == ("4 trials finished: 0 complete, 4 pruned (0 failed)" if requested is None
                      else "4 of 30 trials finished: 0 complete, 4 pruned (0 failed)")
    assert out[2] == line


def test_a_budget_without_trials_goes_on_past_the_default_count(in_tmp, tiny_npz, capsys,
                                                                 monkeypatch):
    monkeypatch.setattr(config, "DEFAULT_TRIALS", 2)  # seen by the trials: --workers 0
    code = run_main(["tune", "--arch", "mlp", "--dataset", f"npz:{tiny_npz}", "--epochs", "1",
                     "--seed", "1", "--budget", "10s", "--workers", "0"])
    out = capsys.readouterr().out
    assert code == 0
    assert int(re.search(r"^(\d+) trials finished: ", out, re.M).group(1)) > 2
    assert "\nStopped: the time budget (10s) ran out" in out
