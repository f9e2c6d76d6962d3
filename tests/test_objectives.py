"""Objectives: the names --objective takes, their directions and dominance."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from conftest import tune_args
from optuna.study import StudyDirection
from optuna.trial import TrialState

from autodl import storage
from autodl.cli import main
from autodl.errors import AutodlError
from autodl.objectives import (
    OBJECTIVES,
    directions,
    dominates,
    metric_names,
    parse_objectives,
)
from autodl.storage import TrialAttr


def test_objectives_are_comma_separated_or_repeated_and_accuracy_comes_first():
    assert parse_objectives(["latency,accuracy"]) == ("accuracy", "latency")
    assert parse_objectives(["size", "accuracy", " params"]) == ("accuracy", "size", "params")
    assert parse_objectives(["accuracy"]) == ("accuracy",)


@pytest.mark.parametrize(("texts", "message"), [
    (["accuracy,speed"], "unknown objective 'speed'; choose from accuracy, params, size, latency"),
    (["accuracy,latency", "latency"], "--objective names latency twice"),
    (["latency,size"], "--objective latency,size leaves out accuracy"),
])
def test_bad_objectives_are_refused(texts, message):
    with pytest.raises(AutodlError, match=message):
        parse_objectives(texts)


def test_directions_and_metric_names_follow_the_table():
    assert directions(["accuracy", "latency"]) == ["maximize", "minimize"]
    assert metric_names(["accuracy", "size"]) == ["val_accuracy", "size_bytes"]
    assert all(o.direction in ("maximize", "minimize") for o in OBJECTIVES.values())


def test_dominance_needs_no_worse_everywhere_and_better_somewhere():
    up_down = [True, False]  # accuracy up, latency down
    assert dominates([0.9, 1.0], [0.8, 2.0], up_down)
    assert dominates([0.9, 1.0], [0.9, 2.0], up_down)
    assert not dominates([0.9, 1.0], [0.9, 1.0], up_down)  # a tie dominates nothing
    assert not dominates([0.9, 3.0], [0.8, 2.0], up_down)  # more accurate, but slower


# A study tuned for several objectives, end to end through the command line.

def _study(folder, name):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{folder}/studies/autodl.db")


def test_a_study_of_accuracy_and_latency_stores_what_optuna_reads(in_tmp, tiny_npz, capsys):
    assert main(tune_args(f"npz:{tiny_npz}", "--study", "mo", "--objective", "accuracy,latency",
                          trials=4)) == 0
    out = capsys.readouterr().out
    study = _study(in_tmp, "mo")
    assert study.directions == [StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE]
    assert study.metric_names == ["val_accuracy", "latency_ms"]  # the dashboard's axes
    assert storage.study_objectives(study) == ["accuracy", "latency"]
    # A study for deployment searches the cheapest models too: one layer.
    assert {trial.distributions["depth"].low for trial in study.trials} == {1}
    for trial in study.get_trials(states=[TrialState.COMPLETE]):
        attrs = trial.user_attrs
        assert trial.values == [max(r["val_accuracy"] for r in attrs[TrialAttr.HISTORY]),
                                attrs[TrialAttr.LATENCY_MS]]
        assert attrs[TrialAttr.LATENCY_RUNTIME].startswith("litert ")
        assert attrs[TrialAttr.SIZE_BYTES] > 0
    front = storage.pareto_front(study)
    assert front and [t.number for t in front] == sorted(
        (t.number for t in study.best_trials), key=lambda n: -study.trials[n].values[0])
    tested = storage.recorded_front_test(study)
    for trial in front:  # every trial on the front keeps its model, tested at the end
        assert TrialAttr.MODEL_ARTIFACT in trial.user_attrs
        assert 0 <= tested[trial.number] <= 1
    assert "Pareto front of accuracy against latency" in out
    assert "autodl export mo --trial N" in out
    assert " latency_ms " in out  # each trial's line shows its latency


def test_trials_of_one_architecture_share_its_first_measured_latency(in_tmp, tiny_npz):
    # The architecture fixed: the queued defaults and low end differ in dropout alone.
    fixed = ["--set", "depth=1", "--set", "filters=16", "--set", "units=64"]
    assert main(tune_args(f"npz:{tiny_npz}", "--study", "mo", "--objective",
                          "accuracy,latency,size", *fixed, arch="cnn", trials=2)) == 0
    first, second = _study(in_tmp, "mo").trials
    assert (first.params["dropout"], second.params["dropout"]) == (0.25, 0.0)
    assert first.user_attrs[TrialAttr.ARCHITECTURE] == second.user_attrs[TrialAttr.ARCHITECTURE]
    assert TrialAttr.MEASURED_ON_TRIAL not in first.user_attrs
    assert second.user_attrs[TrialAttr.MEASURED_ON_TRIAL] == 0
    for attr in (TrialAttr.LATENCY_MS, TrialAttr.SIZE_BYTES):  # no timer noise
        assert second.user_attrs[attr] == first.user_attrs[attr]


def test_a_study_for_deployment_trains_the_defaults_then_the_low_end(in_tmp, tiny_npz):
    for name, options in (("mo", ["--objective", "accuracy,params"]), ("acc", [])):
        assert main(tune_args(f"npz:{tiny_npz}", "--study", name, *options, arch="cnn",
                              trials=2)) == 0
    defaults, low_end = (trial.user_attrs[TrialAttr.HYPERPARAMETERS]
                         for trial in _study(in_tmp, "mo").trials)
    # The front's fast end: the cnn's smallest model, trained as the defaults are.
    assert low_end == {**defaults, "depth": 1, "filters": 16, "units": 64, "dropout": 0.0}
    assert defaults["depth"] > 1 and defaults["filters"] > 16
    # A study of accuracy alone queues the defaults only; its second trial is sampled.
    queued = ["fixed_params" in trial.system_attrs for trial in _study(in_tmp, "acc").trials]
    assert queued == [True, False]


def test_pruning_happens_in_a_multi_objective_study(in_tmp, tiny_npz):
    assert main(tune_args(f"npz:{tiny_npz}", "--study", "mo", "--objective", "accuracy,params",
                          "--epochs", "3", trials=8)) == 0
    study = _study(in_tmp, "mo")
    pruned = study.get_trials(states=[TrialState.PRUNED])
    assert pruned, "the pareto pruner stopped no trial"
    labels = storage.study_splits(study).y_val
    chance = (np.bincount(labels).max() + 0.5) / len(labels)  # the pruner's, float32-proof
    for trial in pruned:  # each learned nothing, or trailed a trial of no more parameters
        epochs = trial.user_attrs[TrialAttr.STOPPED_EPOCH]
        assert epochs in (1, 2)  # the one rung of 3 epochs; at chance, any epoch but the last
        # The summary says which rule stopped it.
        assert trial.user_attrs[TrialAttr.PRUNED_BECAUSE].startswith(f"pruned at epoch {epochs}: ")
        accuracy = max(r["val_accuracy"] for r in trial.user_attrs[TrialAttr.HISTORY])
        params = trial.user_attrs[TrialAttr.PARAMS_COUNT]
        assert accuracy <= chance or any(
            other.user_attrs[TrialAttr.PARAMS_COUNT] <= params
            and max(r["val_accuracy"] for r in other.user_attrs[TrialAttr.HISTORY][:epochs])
            > accuracy
            for other in study.trials if other.number < trial.number
            and TrialAttr.HISTORY in other.user_attrs)


@pytest.mark.parametrize(("limit", "reason"), [
    (["--max-params", "10"], "over --max-params 10: "),
    (["--max-latency", "1e-6"], "over --max-latency 1e-06: "),
    (["--max-size", "0.001"], "over --max-size 0.001: "),
])
def test_a_limit_broken_at_build_time_prunes_the_trial_untrained(in_tmp, tiny_npz, capsys, limit,
                                                                 reason):
    assert main(tune_args(f"npz:{tiny_npz}", "--study", "small", *limit, trials=2)) == 0
    assert "No trial completed" in capsys.readouterr().out
    study = _study(in_tmp, "small")
    key = limit[0].removeprefix("--")
    for trial in study.trials:
        assert trial.state == TrialState.PRUNED
        assert trial.user_attrs[TrialAttr.STOPPED_EPOCH] == 0
        assert TrialAttr.HISTORY not in trial.user_attrs  # it never trained
        assert trial.user_attrs[TrialAttr.PRUNED_BECAUSE].startswith(reason)
        assert trial.constraints[key] > 0  # the sampler learns it is infeasible


def test_a_limit_the_models_meet_lets_them_train(in_tmp, tiny_npz):
    assert main(tune_args(f"npz:{tiny_npz}", "--study", "roomy", "--max-params", "1e9",
                          "--max-latency", "1000", trials=2)) == 0
    study = _study(in_tmp, "roomy")
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert all(t.constraints["max-params"] <= 0 and t.constraints["max-latency"] <= 0
               for t in study.trials)
    assert study.directions == [StudyDirection.MAXIMIZE]  # limits alone add no objective


def test_a_study_continues_only_with_the_objectives_it_was_tuned_for(in_tmp, tiny_npz, capsys):
    assert main(tune_args(f"npz:{tiny_npz}", "--study", "s", trials=1)) == 0
    capsys.readouterr()
    assert main(tune_args(f"npz:{tiny_npz}", "--study", "s", "--objective", "accuracy,size",
                          trials=2)) == 2
    assert ("study 's' was tuned for --objective accuracy, not accuracy,size"
            in capsys.readouterr().err)
    assert len(_study(in_tmp, "s").trials) == 1
