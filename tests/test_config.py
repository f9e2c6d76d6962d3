"""The search space and the options of ``autodl tune``: parsing, narrowing, loading, validating."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import pytest

from autodl.config import (
    DEFAULT_STORAGE,
    SHARED_DEFAULTS,
    TRAINING_SPACE,
    Choice,
    Fixed,
    FloatRange,
    IntRange,
    Space,
    TuneConfig,
    describe_training,
    first_value,
    load_config,
    parse_assignment,
    parse_spec,
)
from autodl.errors import AutodlError

# --- parse_spec -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("adam", Fixed("adam")),
        (3, Fixed(3)),
        (0.5, Fixed(0.5)),
        (True, Fixed(True)),
        ([32, 64], Choice((32, 64))),
        (["adam", "sgd"], Choice(("adam", "sgd"))),
        ({"values": [1, 2]}, Choice((1, 2))),
        ({"low": 2, "high": 8}, IntRange(2, 8)),
        ({"low": 16, "high": 256, "step": 16}, IntRange(16, 256, 16)),
        ({"low": 8, "high": 512, "log": True}, IntRange(8, 512, 1, True)),
        ({"low": 0.0, "high": 0.5}, FloatRange(0.0, 0.5)),
        ({"low": 0, "high": 0.5}, FloatRange(0.0, 0.5)),
        ({"low": 1e-4, "high": 1e-2, "log": True}, FloatRange(1e-4, 1e-2, log=True)),
        ({"low": 0.0, "high": 0.9, "step": 0.1}, FloatRange(0.0, 0.9, step=0.1)),
        # zero makes a float range even of whole numbers
        ({"low": 1, "high": 10, "zero": True}, FloatRange(1.0, 10.0, zero=True)),
        (
            {"low": 1e-6, "high": 1e-3, "log": True, "zero": True},
            FloatRange(1e-6, 1e-3, log=True, zero=True),
        ),
    ],
)
def test_parse_spec(raw, expected):
    spec = parse_spec("x", raw)
    assert spec == expected
    assert type(spec) is type(expected)
    if isinstance(spec, FloatRange):
        assert isinstance(spec.low, float) and isinstance(spec.high, float)


def test_parse_spec_zero_flag_adds_zero_to_a_range():
    spec = parse_spec("weight_decay", {"low": 1e-6, "high": 1e-3, "log": True, "zero": True})
    assert spec.contains(0) and spec.contains(0.0) and spec.contains(1e-4)
    assert not spec.contains(1e-7)
    assert not parse_spec("wd", {"low": 1e-6, "high": 1e-3}).contains(0.0)
    assert first_value(spec) == 0.0
    assert spec.describe() == "0, or float 1e-06..0.001 log"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"low": 5, "high": 1}, "low (5) is greater than high (1)"),
        ({"low": 0.5, "high": 0.1}, "greater than high"),
        ({"low": 0, "high": 1, "log": True}, "log range needs low > 0"),
        ({"low": -1.0, "high": 1.0, "log": True}, "log range needs low > 0"),
        ({"low": 1, "high": 100, "log": True, "step": 2}, "log range cannot have a step"),
        ({"low": 1, "high": 10, "step": 0}, "step must be positive"),
        ({"low": 1, "high": 10, "step": -1}, "step must be positive"),
        ({"low": 1, "high": 10, "steps": 2}, "got high, low, steps"),
        ({"low": 1, "max": 10}, "a range needs low and high"),
        ({"high": 10}, "a range needs low and high"),
        ({}, "a range needs low and high"),
        ({"low": "a", "high": 10}, "must be numbers"),
        ({"low": True, "high": 10}, "must be numbers"),
        ({"low": 1, "high": 10, "log": "yes"}, "must be true or false"),
        ({"low": 1, "high": 10, "zero": 1}, "must be true or false"),
        ([], "non-empty list"),
        ([1, [2]], "non-empty list of plain values"),
        ([{"a": 1}], "non-empty list of plain values"),
        ({"values": 5}, "values must be a list"),
        ({"values": "abc"}, "values must be a list"),
    ],
)
def test_parse_spec_errors(raw, message):
    with pytest.raises(AutodlError, match="^x: ") as error:
        parse_spec("x", raw)
    assert message in str(error.value)


# --- parse_assignment (--set) -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("optimizer=adam", ("optimizer", Fixed("adam"))),
        ("optimizer = adam ", ("optimizer", Fixed("adam"))),
        ('optimizer="adam"', ("optimizer", Fixed("adam"))),
        ("batch_size=64", ("batch_size", Fixed(64))),
        ("learning_rate=1e-3", ("learning_rate", Fixed(1e-3))),
        ("flag=true", ("flag", Fixed(True))),
        ("batch_size=[32,64]", ("batch_size", Choice((32, 64)))),
        ("batch_size = [32, 64, 128]", ("batch_size", Choice((32, 64, 128)))),
        ('optimizer=["adam", "sgd"]', ("optimizer", Choice(("adam", "sgd")))),
        ("lr_schedule=[constant, cosine]", ("lr_schedule", Choice(("constant", "cosine")))),
        ("mixed=[relu,1e-3,true,64,]", ("mixed", Choice(("relu", 1e-3, True, 64)))),
        ("lr={low=1e-4,high=1e-2,log=true}", ("lr", FloatRange(1e-4, 1e-2, log=True))),
        ("depth={low=2, high=4}", ("depth", IntRange(2, 4))),
        ("weight_decay={low=1e-6,high=1e-3,log=true,zero=true}",
         ("weight_decay", FloatRange(1e-6, 1e-3, log=True, zero=True))),
    ],
)
def test_parse_assignment(text, expected):
    # repr also tells 64 from 64.0 and True from 1
    assert repr(parse_assignment(text)) == repr(expected)


@pytest.mark.parametrize("text", ["optimizer", "=adam", "optimizer=", "optimizer=  ", " = 3", ""])
def test_parse_assignment_needs_name_and_value(text):
    with pytest.raises(AutodlError, match="--set expects name=value"):
        parse_assignment(text)


@pytest.mark.parametrize(
    "text", ["batch_size=[32,64", "lr={low=1e-4,high=1e-2,log=True}", "lr={low=1", 'x="abc']
)
def test_parse_assignment_reports_broken_toml(text):
    # Broken lists and tables must not silently become a fixed string value.
    with pytest.raises(AutodlError, match="is not valid TOML"):
        parse_assignment(text)


def test_parse_assignment_passes_spec_errors_on():
    with pytest.raises(AutodlError, match="lr: low .* greater than high"):
        parse_assignment("lr={low=1e-2,high=1e-4}")


# --- Space.resolve ------------------------------------------------------------------------


def test_resolve_without_override_keeps_the_declaration():
    declared = IntRange(16, 256, 16)
    assert Space().resolve("units", declared) is declared
    assert Space().resolve("weight_decay", TRAINING_SPACE["weight_decay"]) == (
        TRAINING_SPACE["weight_decay"])


@pytest.mark.parametrize(
    ("declared", "wanted", "expected"),
    [
        (IntRange(1, 6), IntRange(2, 4), IntRange(2, 4)),
        (IntRange(1, 6), Fixed(3), Fixed(3)),
        (IntRange(1, 6), Choice((1, 6)), Choice((1, 6))),
        (FloatRange(1e-5, 1e-1, log=True), FloatRange(1e-4, 1e-2, log=True),
         FloatRange(1e-4, 1e-2, log=True)),
        # whole numbers for a float range become floats
        (FloatRange(0.0, 0.9), IntRange(0, 0), FloatRange(0.0, 0.0)),
        (FloatRange(0.0, 0.9), Fixed(0), Fixed(0.0)),
        (FloatRange(0.0, 0.9), Choice((0, 0.5)), Choice((0.0, 0.5))),
        (FloatRange(1e-6, 1e-1, log=True, zero=True), Fixed(0.0), Fixed(0.0)),
        (FloatRange(1e-6, 1e-1, log=True, zero=True),
         FloatRange(1e-6, 1e-3, log=True, zero=True), FloatRange(1e-6, 1e-3, log=True, zero=True)),
        (Choice(("adam", "sgd", "rmsprop")), Choice(("adam", "sgd")), Choice(("adam", "sgd"))),
        (Choice(("adam", "sgd")), Fixed("sgd"), Fixed("sgd")),
        (Choice((16, 32, 64)), Fixed(32), Fixed(32)),
        (Choice((False, True)), Fixed(True), Fixed(True)),
        (Fixed(3), Fixed(3), Fixed(3)),
    ],
)
def test_resolve_narrows_within_the_declaration(declared, wanted, expected):
    resolved = Space({"h": wanted}).resolve("h", declared)
    assert repr(resolved) == repr(expected)  # 0.0 and 0 are equal, not the same here


def test_resolve_gives_the_declared_type_of_a_choice():
    # `--set units=128.0` must reach the plugin as the int it declared, not 128.0.
    resolved = Space({"units": Fixed(128.0)}).resolve("units", Choice((64, 128, 256)))
    assert repr(resolved) == "Fixed(value=128)"
    resolved = Space({"units": Choice((64.0, 256))}).resolve("units", Choice((64, 128, 256)))
    assert repr(resolved) == "Choice(values=(64, 256))"


@pytest.mark.parametrize(
    ("declared", "wanted", "message"),
    [
        (IntRange(1, 6), Fixed(7), r"h=7 is not allowed: h takes int 1\.\.6"),
        (IntRange(1, 6), Fixed(0), "h=0 is not allowed"),
        (IntRange(1, 6), Fixed(2.5), "h=2.5 is not allowed"),
        (IntRange(1, 6), Fixed(True), "h=True is not allowed"),
        (IntRange(16, 256, 16), Fixed(20), "h=20 is not allowed: h takes int 16..256 step 16"),
        (FloatRange(0.0, 0.9), Fixed(0.95), "h=0.95 is not allowed"),
        (FloatRange(0.0, 0.9), Fixed("high"), "h='high' is not allowed"),
        (FloatRange(1e-5, 1e-1, log=True), Fixed(0.0), "h=0 is not allowed"),
        (Choice(("adam", "sgd")), Fixed("nadam"), "h='nadam' is not allowed: h takes one of"),
        (Choice((16, 32)), Fixed(True), "h=True is not allowed"),
        (Choice((False, True)), Fixed(1), "h=1 is not allowed"),
        (Fixed(3), Fixed(4), "h=4 is not allowed: h takes fixed 3"),
        (Choice(("adam", "sgd")), Choice(("adam", "nadam", "lamb")), "h: 'nadam', 'lamb' not"),
        (IntRange(1, 6), Choice((2, 9)), "h: 9 not allowed"),
        (Choice((16, 32)), IntRange(16, 32), "h cannot be a range"),
        (Fixed(3), IntRange(1, 3), "h cannot be a range"),
        (IntRange(1, 6), FloatRange(1.0, 2.0), "h needs whole numbers"),
        (IntRange(1, 6), IntRange(0, 3), "h range int 0..3 is outside what it allows"),
        (IntRange(1, 6), IntRange(2, 7), "outside what it allows"),
        (FloatRange(0.0, 0.9), FloatRange(0.1, 1.0), "outside what it allows"),
        (FloatRange(1e-5, 1e-1, log=True), FloatRange(1e-3, 1e-2, zero=True),
         "outside what it allows"),
    ],
)
def test_resolve_refuses_what_the_declaration_cannot_take(declared, wanted, message):
    with pytest.raises(AutodlError, match=message):
        Space({"h": wanted}).resolve("h", declared)


def test_resolve_training_space_overrides():
    space = Space({
        "optimizer": Fixed("adam"),
        "batch_size": Choice((32, 64)),
        "learning_rate": FloatRange(1e-4, 1e-2, log=True),
    })
    assert space.resolve("optimizer", TRAINING_SPACE["optimizer"]) == Fixed("adam")
    assert space.resolve("batch_size", TRAINING_SPACE["batch_size"]) == Choice((32, 64))
    assert space.resolve("learning_rate", TRAINING_SPACE["learning_rate"]) == FloatRange(
        1e-4, 1e-2, log=True
    )
    with pytest.raises(AutodlError, match="batch_size=48 is not allowed"):
        Space({"batch_size": Fixed(48)}).resolve("batch_size", TRAINING_SPACE["batch_size"])
    with pytest.raises(AutodlError, match="optimizer='nadam' is not allowed"):
        Space({"optimizer": Fixed("nadam")}).resolve("optimizer", TRAINING_SPACE["optimizer"])


def test_resolve_cuts_shared_defaults_to_their_overlap():
    assert SHARED_DEFAULTS["depth"] == IntRange(2, 20)
    assert SHARED_DEFAULTS["dropout"] == FloatRange(0.0, 0.5)
    space = Space()
    # a plugin's depth 1..6 and dropout 0..0.9 (mlp) meet the documented defaults
    assert space.resolve("depth", IntRange(1, 6)) == IntRange(2, 6)
    assert space.resolve("dropout", FloatRange(0.0, 0.9)) == FloatRange(0.0, 0.5)
    # other settings of the declaration are kept
    assert space.resolve("depth", IntRange(1, 30, 1, True)) == IntRange(2, 20, 1, True)
    assert space.resolve("dropout", FloatRange(0.0, 0.9, step=0.1)) == FloatRange(
        0.0, 0.5, step=0.1
    )
    # inside the default, or no overlap, or another kind: the declaration stands
    assert space.resolve("depth", IntRange(3, 5)) == IntRange(3, 5)
    assert space.resolve("depth", IntRange(30, 40)) == IntRange(30, 40)
    assert space.resolve("depth", Choice((1, 2, 3))) == Choice((1, 2, 3))
    assert space.resolve("dropout", Fixed(0.7)) == Fixed(0.7)
    assert space.resolve("units", IntRange(1, 6)) == IntRange(1, 6)


def test_the_training_defaults_search_where_the_optimizers_train_and_widen_on_request():
    space = Space()
    assert space.resolve("learning_rate", TRAINING_SPACE["learning_rate"]) == FloatRange(
        1e-4, 1e-2, log=True)
    assert space.resolve("optimizer", TRAINING_SPACE["optimizer"]) == Choice(
        ("adam", "sgd", "rmsprop"))
    # What the core allows stays within reach of the user's settings.
    wide = Space({"learning_rate": FloatRange(1e-5, 1e-1, log=True),
                  "optimizer": Fixed("adagrad")})
    assert wide.resolve("learning_rate", TRAINING_SPACE["learning_rate"]) == (
        TRAINING_SPACE["learning_rate"])
    assert wide.resolve("optimizer", TRAINING_SPACE["optimizer"]) == Fixed("adagrad")


def test_user_override_replaces_the_shared_default():
    # The user may use the plugin's whole range, beyond the documented default.
    space = Space({"depth": Fixed(1), "dropout": FloatRange(0.0, 0.8)})
    assert space.resolve("depth", IntRange(1, 6)) == Fixed(1)
    assert space.resolve("dropout", FloatRange(0.0, 0.9)) == FloatRange(0.0, 0.8)


def test_check_known():
    known = {"depth", "units"} | set(TRAINING_SPACE)
    Space({"depth": Fixed(2), "optimizer": Fixed("adam")}).check_known(known, "mlp")
    Space().check_known(set(), "mlp")
    with pytest.raises(AutodlError) as error:
        Space({"depht": Fixed(2), "zeta": Fixed(1), "units": Fixed(3)}).check_known(known, "mlp")
    message = str(error.value)
    assert message.startswith("unknown hyperparameter depht, zeta for arch mlp; known: ")
    assert "depth" in message and "learning_rate" in message and "units" not in message.split(
        ";")[0]


def test_space_describe():
    space = Space({"optimizer": Fixed("adam"), "batch_size": Choice((32, 64)),
                   "depth": IntRange(2, 4)})
    assert space.describe() == {
        "batch_size": "one of 32, 64",
        "depth": "int 2..4",
        "optimizer": "fixed 'adam'",
    }


# --- load_config ---------------------------------------------------------------------------


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_load_config_defaults():
    config = load_config({"arch": "mlp"})
    assert config == TuneConfig(arch="mlp")
    assert config.dataset == "digits" and config.trial_limit == 20
    assert config.storage == DEFAULT_STORAGE
    assert config.space == Space()
    assert config.study_name == "mlp-digits"


def test_load_config_none_means_not_given():
    config = load_config({"arch": "mlp", "trials": None, "dataset": None, "seed": None})
    assert config.trial_limit == 20 and config.dataset == "digits" and config.seed is None


def test_a_budget_without_trials_runs_trials_until_it_ends():
    assert load_config({"arch": "mlp", "budget": "10m"}).trial_limit is None
    assert load_config({"arch": "mlp", "budget": "10m", "trials": 5}).trial_limit == 5


def test_load_config_reads_tune_and_space_tables(tmp_path):
    path = write(tmp_path / "study.toml", """
[tune]
arch = "cnn"
dataset = "npz:data.npz"
trials = 7
epochs = 3
timeout = 60
val_split = 0.2
seed = 5

[space]
learning_rate = {low = 1e-4, high = 1e-2, log = true}
batch_size = [32, 64]
optimizer = "adam"

[space.depth]
low = 2
high = 4
""")
    config = load_config({}, path)
    assert (config.arch, config.dataset, config.trials, config.epochs) == (
        "cnn", "npz:data.npz", 7, 3)
    assert config.timeout == 60 and config.val_split == 0.2 and config.seed == 5
    assert config.space.overrides == {
        "learning_rate": FloatRange(1e-4, 1e-2, log=True),
        "batch_size": Choice((32, 64)),
        "optimizer": Fixed("adam"),
        "depth": IntRange(2, 4),
    }
    assert config.study_name == "cnn-npz"


def test_command_line_wins_over_the_file(tmp_path):
    path = write(tmp_path / "study.toml", """
[tune]
arch = "cnn"
trials = 7
epochs = 3

[space]
optimizer = "adam"
batch_size = [32, 64]
""")
    config = load_config({"arch": "mlp", "trials": 2, "epochs": None}, path,
                         ["optimizer=sgd", "depth=3"])
    assert (config.arch, config.trials, config.epochs) == ("mlp", 2, 3)
    assert config.space.overrides == {
        "optimizer": Fixed("sgd"),
        "batch_size": Choice((32, 64)),
        "depth": Fixed(3),
    }


def test_the_example_study_file_loads():
    example = Path(__file__).resolve().parents[1] / "examples" / "example.toml"
    config = load_config({}, str(example))
    assert config.arch and config.space.overrides
    for name in set(config.space.overrides) & set(TRAINING_SPACE):
        config.space.resolve(name, TRAINING_SPACE[name])  # raises if it does not fit


def test_load_config_assignments_without_a_file():
    config = load_config({"arch": "mlp"}, None, ["batch_size=[32,64]", "optimizer=adam"])
    assert config.space.overrides == {"batch_size": Choice((32, 64)), "optimizer": Fixed("adam")}
    with pytest.raises(AutodlError, match="--set expects name=value"):
        load_config({"arch": "mlp"}, None, ["optimizer"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[tune]\narch = 'mlp'\n[tuning]\nx = 1\n", "unknown table tuning; use"),
        ("[spaces]\nx = 1\n", "unknown table spaces"),
        ("arch = 'mlp'\n", "unknown table arch"),
        ("[tune]\narch = 'mlp'\nepochz = 3\n", "unknown option epochz in [tune]; known: "),
        ("[tune]\narch = 'mlp'\nspace = 'x.toml'\n", "unknown option space in [tune]"),
        ("tune = 'mlp'\n", "tune must be a table"),
        ("space = [1, 2]\n[tune]\narch = 'mlp'\n", "space must be a table"),
        ("[tune]\narch = 'mlp'\ntrials = '5'\n", "option trials must be a whole number, got '5'"),
        ("[tune]\narch = 'mlp'\ntrials = 2.5\n", "option trials must be a whole number"),
        ("[tune]\narch = 'mlp'\ntrials = true\n", "option trials must be a whole number"),
        ("[tune]\narch = 'mlp'\nseed = 1.5\n", "option seed must be a whole number"),
        ("[tune]\narch = 'mlp'\nval_split = 'a'\n", "option val_split must be a number"),
        ("[tune]\narch = 'mlp'\ntimeout = false\n", "option timeout must be a number"),
        ("[tune]\narch = 5\n", "option arch must be text, got 5"),
        ("[tune]\narch = 'mlp'\nstudy = 3\n", "option study must be text"),
        ("[tune]\narch = 'mlp'\n[space]\ndepth = {low = 4, high = 2}\n",
         "depth: low .4. is greater than high"),
        ("[tune]\narch = 'mlp'\n[space]\ndepth = []\n", "depth: a choice must be a non-empty"),
        ("[tune]\narch = 'mlp'\ntrials = 0\n", "--trials must be at least 1, got 0"),
    ],
)
def test_load_config_file_errors(tmp_path, text, message):
    path = write(tmp_path / "study.toml", text)
    with pytest.raises(AutodlError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config({}, path)


def test_load_config_missing_file(tmp_path):
    with pytest.raises(AutodlError, match="space file not found: .*nope.toml"):
        load_config({"arch": "mlp"}, str(tmp_path / "nope.toml"))
    with pytest.raises(AutodlError, match="space file not found"):
        load_config({"arch": "mlp"}, str(tmp_path))  # a folder is not a file


@pytest.mark.parametrize("text", ["[tune\narch = 'mlp'\n", "[tune]\narch = mlp\n",
                                  "[tune]\ntrials = 1\ntrials = 2\n"])
def test_load_config_malformed_toml(tmp_path, text):
    path = write(tmp_path / "bad.toml", text)
    with pytest.raises(AutodlError, match="bad.toml is not valid TOML"):
        load_config({"arch": "mlp"}, path)


def test_load_config_file_not_utf8(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes("[tune]\narch = 'caf\xe9'\n".encode("latin-1"))
    with pytest.raises(AutodlError, match="is not valid TOML"):
        load_config({}, str(path))


def test_arch_is_required(tmp_path):
    with pytest.raises(AutodlError, match="--arch is required"):
        load_config({})
    with pytest.raises(AutodlError, match="--arch is required"):
        load_config({"arch": ""})
    path = write(tmp_path / "study.toml", "[tune]\ntrials = 3\n")
    with pytest.raises(AutodlError, match="--arch is required"):
        load_config({"trials": None}, path)
    assert load_config({"arch": "mlp"}, path).trials == 3


# --- validate ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"trials": 0}, "--trials must be at least 1, got 0"),
        ({"trials": -3}, "--trials must be at least 1"),
        ({"epochs": 0}, "--epochs must be at least 1"),
        ({"patience": 0}, "--patience must be at least 1"),
        ({"budget": "soon"}, "--budget needs a duration like 90s, 10m or 1h30m, got 'soon'"),
        ({"budget": "0"}, "--budget must be more than zero, got '0'"),
        ({"budget": "-5m"}, "--budget needs a duration like 90s, 10m or 1h30m"),
        ({"val_split": 0}, "--val-split must be between 0 and 1"),
        ({"val_split": 1.0}, "--val-split must be between 0 and 1"),
        ({"test_split": -0.1}, "--test-split must be between 0 and 1"),
        ({"test_split": 1.5}, "--test-split must be between 0 and 1"),
        ({"max_samples": 5}, "--max-samples must be at least 10"),
        ({"timeout": 0}, "--timeout must be a positive number"),
        ({"timeout": -1.0}, "--timeout must be a positive number"),
        ({"timeout": math.inf}, "--timeout must be a positive number"),
        ({"timeout": math.nan}, "--timeout must be a positive number"),
        ({"image_size": 4}, "--image-size must be at least 8"),
        ({"study": "../x"}, "bad study name '../x'"),
        ({"study": "a/b"}, "bad study name 'a/b'"),
        ({"study": ".hidden"}, "bad study name"),
        ({"study": "-x"}, "bad study name"),
        ({"study": "a b"}, "bad study name"),
        ({"study": "x" * 129}, "bad study name"),
        ({"objective": "accuracy,accuracy"}, "--objective names accuracy twice"),
        ({"max_latency": 0}, "--max-latency must be more than zero (ms), got 0"),
        ({"max_params": -5}, "--max-params must be more than zero (parameters), got -5"),
        ({"max_size": math.inf}, "--max-size must be more than zero (MB), got inf"),
    ],
)
def test_validate_errors(options, message):
    with pytest.raises(AutodlError, match=re.escape(message)):
        load_config({"arch": "mlp", **options})
    with pytest.raises(AutodlError, match=re.escape(message)):
        TuneConfig(arch="mlp", **options).validate()


@pytest.mark.parametrize(
    "options",
    [
        {"trials": 1, "epochs": 1, "patience": 1},
        {"pruner": "none", "sampler": "random"},
        {"val_split": 0.5, "test_split": 0.01},
        {"max_samples": 10, "timeout": 0.5, "image_size": 8},
        {"study": "My_study-2.v1"},
        {"study": "x" * 128},
    ],
)
def test_validate_accepts(options):
    config = load_config({"arch": "mlp", **options})
    for name, value in options.items():
        assert getattr(config, name) == value


@pytest.mark.parametrize(
    ("arch", "dataset", "name"),
    [
        ("mlp", "digits", "mlp-digits"),
        ("cnn", "npz:/data/x.npz", "cnn-npz"),
        ("models/my_net.py", "idx:../mnist", "my_net-idx"),
        ("kt:HyperResNet", "cifar10", "kt_HyperResNet-cifar10"),
    ],
)
def test_default_study_name_is_safe(arch, dataset, name):
    config = load_config({"arch": arch, "dataset": dataset})
    assert config.study_name == name


def test_a_fixed_or_choice_shared_default_applies_where_the_declaration_allows_it(monkeypatch):
    monkeypatch.setitem(SHARED_DEFAULTS, "flip", Fixed("none"))
    space = Space()
    assert space.resolve("flip", Choice(("none", "horizontal"))) == Fixed("none")
    # a declaration without the default value keeps its own
    assert space.resolve("flip", Choice(("horizontal", "vertical"))) == Choice(
        ("horizontal", "vertical")
    )
    # the user can still search what the plugin declares
    assert Space({"flip": Choice(("none", "horizontal"))}).resolve(
        "flip", Choice(("none", "horizontal"))
    ) == Choice(("none", "horizontal"))
    monkeypatch.setitem(SHARED_DEFAULTS, "units", Choice((64, 128)))
    assert space.resolve("units", Choice((32, 64, 128))) == Choice((64, 128))


# --- the training recipe ------------------------------------------------------------------


def test_lr_schedule_and_plateau_are_searchable_but_off_unless_widened():
    space = Space()
    assert space.resolve("lr_schedule", TRAINING_SPACE["lr_schedule"]) == Fixed("constant")
    assert space.resolve("lr_plateau", TRAINING_SPACE["lr_plateau"]) == Fixed(False)
    config = load_config({"arch": "mlp"}, None, ["lr_schedule=[constant,cosine]",
                                                 "lr_plateau=[false,true]"])
    assert config.space.resolve("lr_schedule", TRAINING_SPACE["lr_schedule"]) == Choice(
        ("constant", "cosine"))
    assert config.space.resolve("lr_plateau", TRAINING_SPACE["lr_plateau"]) == Choice(
        (False, True))
    with pytest.raises(AutodlError, match="lr_schedule: 'linear' not allowed"):
        Space({"lr_schedule": Choice(("constant", "linear"))}).resolve(
            "lr_schedule", TRAINING_SPACE["lr_schedule"])


@pytest.mark.parametrize(
    ("assignments", "message"),
    [
        (["lr_decay_rate=0.9"], "lr_decay_rate is used only when lr_schedule is 'exponential', "
                                "but lr_schedule takes fixed 'constant': set lr_schedule too"),
        (["lr_schedule=[constant,cosine]", "lr_cycles=3"], "lr_cycles is used only when "
                                                           "lr_schedule is 'cyclic'"),
        (["lr_plateau_factor=0.5"], "lr_plateau_factor is used only when lr_plateau is True"),
        (["lr_schedule=cosine", "lr_plateau=true"], "lr_plateau is used only when lr_schedule "
                                                    "is 'constant'"),
        # the plateau's own parameters need the schedule that allows the plateau, too
        (["lr_schedule=step", "lr_plateau=true", "lr_plateau_patience=2"],
         "lr_plateau is used only when"),
    ],
)
def test_a_setting_its_parent_never_uses_is_refused(assignments, message):
    with pytest.raises(AutodlError, match=message):
        load_config({"arch": "mlp"}, None, assignments)


@pytest.mark.parametrize(
    "assignments",
    [
        ["lr_schedule=exponential", "lr_decay_rate=0.9"],
        ["lr_schedule=[cosine,cyclic]", "lr_warmup_fraction=0", "lr_cycles=[2,4]"],
        ["lr_plateau=true", "lr_plateau_factor=0.5", "lr_plateau_patience=3"],
        ["lr_schedule=[constant,step]", "lr_plateau=[false,true]", "lr_plateau_factor=0.2"],
    ],
)
def test_settings_a_parent_can_use_are_accepted(assignments):
    assert len(load_config({"arch": "mlp"}, None, assignments).space.overrides) == len(
        assignments)


def test_describe_training_gives_defaults_and_conditions():
    lines = describe_training()
    assert list(lines) == list(TRAINING_SPACE)
    assert lines["lr_schedule"] == (
        "one of 'constant', 'exponential', 'step', 'cosine', 'cyclic'; default fixed 'constant'")
    assert lines["lr_decay_rate"] == "float 0.5..0.99 (only when lr_schedule is 'exponential')"
    assert lines["lr_plateau_patience"] == "int 1..5 (only when lr_plateau is True)"
    assert lines["learning_rate"] == "float 1e-05..0.1 log; default float 0.0001..0.01 log"
    assert lines["batch_size"] == TRAINING_SPACE["batch_size"].describe()


def test_tensorboard_and_mixed_precision_options(tmp_path):
    study = tmp_path / "study.toml"
    study.write_text('[tune]\narch = "mlp"\nmixed_precision = true\ntensorboard = "logs"\n')
    config = load_config({}, str(study))
    assert config.mixed_precision is True and config.tensorboard == "logs"
    assert load_config({"mixed_precision": None}, str(study)).mixed_precision is True
    assert load_config({"arch": "mlp"}).mixed_precision is False
    study.write_text('[tune]\narch = "mlp"\nmixed_precision = 1\n')
    with pytest.raises(AutodlError, match="option mixed_precision must be true or false, got 1"):
        load_config({}, str(study))
    with pytest.raises(AutodlError, match="--tensorboard needs a folder"):
        load_config({"arch": "mlp", "tensorboard": str(study)})
    with pytest.raises(AutodlError, match="--tensorboard needs a folder"):
        load_config({"arch": "mlp", "tensorboard": ""})
    assert load_config({"arch": "mlp", "tensorboard": str(tmp_path / "new" / "logs")})


def test_tensorboard_folder_must_be_writable(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    # root may write in a read-only folder: ask the same question os.access answers
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != locked)
    with pytest.raises(AutodlError, match=f"--tensorboard {locked}/a/b: cannot write in "
                                          f"{locked}$"):
        load_config({"arch": "mlp", "tensorboard": str(locked / "a" / "b")})
    assert load_config({"arch": "mlp", "tensorboard": str(tmp_path / "a" / "b")})


GUIDE = {"depth": 2, "units": 512, "activation": "relu", "dropout": 0.2, "optimizer": "adam",
         "learning_rate": 1e-3, "batch_size": 128, "weight_decay": 0.0,
         "lr_schedule": "constant", "lr_plateau": True, "lr_plateau_factor": 0.5,
         "lr_plateau_patience": 3}


def test_the_guide_preset_fixes_the_guides_mnist_recipe():
    from autodl.registry import find, instantiate
    from autodl.trial import dry_build

    config = load_config({}, str(Path(__file__).resolve().parents[1] / "examples" /
                                 "guide-mlp.toml"))
    assert (config.arch, config.dataset, config.epochs, config.patience) == (
        "mlp", "mnist", 20, 5)
    assert config.space.overrides == {name: Fixed(value) for name, value in GUIDE.items()}
    # mlp's own ranges take every value, so a dry build comes out as the guide's network
    hp = dry_build(instantiate(find("mlp"), (28, 28, 1), 10), config.space)
    assert {name: hp.values[name] for name in GUIDE} == GUIDE


# --- objectives and limits -----------------------------------------------------------------


def test_objectives_and_limits_from_a_study_file(tmp_path):
    path = write(tmp_path / "study.toml", '[tune]\narch = "cnn"\nobjective = ["latency", '
                 '"accuracy"]\nmax_size = 2.5\nmax_params = 1e6\n')
    config = load_config({}, path)
    assert config.objectives == ("accuracy", "latency")
    assert config.limits == {"params": 1e6, "size": 2.5e6}  # size in bytes
    assert config.pruner_name == "pareto"
    assert load_config({"objective": "accuracy,size"}, path).objectives == ("accuracy", "size")


def test_one_objective_and_no_limits_by_default():
    config = load_config({"arch": "mlp"})
    assert (config.objectives, config.limits, config.pruner_name) == (("accuracy",), {}, "sha")


@pytest.mark.parametrize("options, low", [
    ({}, 2),
    ({"objective": "accuracy,latency"}, 1),
    ({"max_params": 1e5}, 1),
    ({"objective": "accuracy,size", "set": ["depth={low=2, high=3}"]}, 2),  # the user's own
])
def test_a_study_for_deployment_searches_depth_from_one(options, low):
    options = {"arch": "cnn", **options}
    config = load_config(options, None, options.pop("set", []))
    assert config.search_space.resolve("depth", IntRange(1, 4)).low == low
    assert config.search_space.overrides == config.space.overrides
