"""Named choices: samplers and pruners come from one table each; an unknown name is an error."""

from __future__ import annotations

import optuna
import pytest
from conftest import validation_labels

from autodl.cli import main
from autodl.config import TuneConfig
from autodl.errors import AutodlError, choose
from autodl.objectives import ACCURACY, LATENCY
from autodl.pruners import PRUNERS
from autodl.samplers import SAMPLERS

LABELS = validation_labels(800)
ONE, TWO = (ACCURACY,), (ACCURACY, LATENCY)


def test_every_sampler_and_pruner_name_makes_one():
    for name, make in SAMPLERS.items():
        try:
            sampler = make(0, ONE)
        except AutodlError as error:  # gp without its optional dependency
            assert name == "gp" and "pip install 'autodl[gp]'" in str(error)
            continue
        assert isinstance(sampler, optuna.samplers.BaseSampler), name
    for name, make in PRUNERS.items():
        pruner = make(10, TWO if name == "pareto" else ONE, LABELS, 30)
        assert isinstance(pruner, optuna.pruners.BasePruner), name
    assert isinstance(PRUNERS["hyperband"](10, ONE, LABELS, 30), optuna.pruners.HyperbandPruner)
    assert isinstance(SAMPLERS["random"](0, ONE), optuna.samplers.RandomSampler)


def test_several_objectives_refuse_the_choices_that_judge_one():
    for name in ("sha", "sha-epochs", "hyperband", "median"):
        with pytest.raises(AutodlError, match=f"--pruner {name} judges one objective; for "
                           "--objective accuracy,latency use pareto"):
            PRUNERS[name](10, TWO, LABELS, 30)
    assert isinstance(PRUNERS["none"](10, TWO, LABELS, 30), optuna.pruners.NopPruner)
    with pytest.raises(AutodlError, match="--pruner pareto is for several objectives"):
        PRUNERS["pareto"](10, ONE, LABELS, 30)
    with pytest.raises(AutodlError, match="--sampler cmaes searches one objective"):
        SAMPLERS["cmaes"](0, TWO)
    for name in ("tpe", "random"):
        assert isinstance(SAMPLERS[name](0, TWO), optuna.samplers.BaseSampler)


def test_defaults_are_the_tables_first_entries():
    config = TuneConfig(arch="cnn")
    assert (config.sampler, config.pruner_name) == (next(iter(SAMPLERS)), next(iter(PRUNERS)))
    assert TuneConfig(arch="cnn", objective="accuracy,latency").pruner_name == "pareto"


def test_an_unknown_name_is_an_error_listing_the_table():
    with pytest.raises(AutodlError, match="unknown pruner .asha.; choose from sha, pareto, "):
        choose(PRUNERS, "asha", "pruner")


@pytest.mark.parametrize("option", ["--sampler", "--pruner"])
def test_cli_refuses_an_unknown_name(option, capsys, tmp_path):
    code = main(["tune", "--arch", "mlp", option, "nope",
                 "--storage", f"sqlite:///{tmp_path}/s.db"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "nope" in err and "choose from" in err
    assert not (tmp_path / "s.db").exists()
