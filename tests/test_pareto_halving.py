"""The multi-objective pruner: a trial meets, at each rung, the trials no dearer than it."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from conftest import validation_labels
from optuna.trial import TrialState, create_trial

from autodl.objectives import ACCURACY, LATENCY
from autodl.pareto_halving import rungs
from autodl.pruners import PRUNERS
from autodl.storage import TrialAttr


def _history(*accuracies: float) -> list[dict[str, float]]:
    return [{"epoch": i + 1, "val_accuracy": a} for i, a in enumerate(accuracies)]


def _study(*others: tuple[float, list[float], TrialState],
           examples: int = 1_000_000) -> optuna.Study:
    """A study of accuracy and latency holding trials of (latency, accuracies, state).

    Its trials train at most 9 epochs (rungs at 1 and 3), their accuracies measured on
    ``examples`` examples: by default so many that the pruner's noise margin is negligible.
    """
    pruner = PRUNERS["pareto"](9, (ACCURACY, LATENCY), validation_labels(examples), 40)
    study = optuna.create_study(directions=["maximize", "minimize"], pruner=pruner)
    for latency, accuracies, state in others:
        values = [max(accuracies), latency] if state == TrialState.COMPLETE else None
        study.add_trial(create_trial(
            state=state, values=values,
            user_attrs={TrialAttr.LATENCY_MS: latency,
                        TrialAttr.HISTORY: _history(*accuracies)}))
    return study


def _verdict(study: optuna.Study, latency: float | None, *accuracies: float) -> str | None:
    """Why a running trial of this latency is pruned after these epochs, if it is."""
    attrs = {TrialAttr.HISTORY: _history(*accuracies)}
    if latency is not None:
        attrs[TrialAttr.LATENCY_MS] = latency
    study.add_trial(create_trial(state=TrialState.RUNNING, user_attrs=attrs))
    trial = study.get_trials(deepcopy=False)[-1]
    verdict = study.pruner.verdict(study, trial)
    assert study.pruner.prune(study, trial) == (verdict is not None)
    return verdict


def _pruned(study: optuna.Study, latency: float | None, *accuracies: float) -> bool:
    """Whether a running trial of this latency is pruned after these epochs."""
    return _verdict(study, latency, *accuracies) is not None


DONE = TrialState.COMPLETE


def test_a_dearer_trial_less_accurate_at_a_rung_is_pruned():
    study = _study((1.0, [0.90, 0.95], DONE))
    assert _pruned(study, 2.0, 0.80)


def test_a_dearer_trial_that_is_more_accurate_goes_on():
    study = _study((1.0, [0.90, 0.95], DONE))
    assert not _pruned(study, 2.0, 0.92)


def test_the_cheapest_trial_goes_on_however_inaccurate_if_of_use():
    """No trial could dominate it: the front's cheap end is never pruned away."""
    study = _study((2.0, [0.90, 0.95], DONE), (3.0, [0.95], DONE))
    assert not _pruned(study, 0.5, 0.60)  # more than half the way from chance (0.10)


def test_a_trial_closer_to_chance_than_to_the_best_is_pruned_however_cheap():
    """Cheap junk must not keep cheap junk going: on MNIST it held the front's fast end."""
    junk = [(0.5, [0.30], DONE), (0.6, [0.25], DONE)]
    study = _study(*junk, (2.0, [0.90, 0.95], DONE), (3.0, [0.95], DONE))
    assert _pruned(study, 0.4, 0.45)  # halfway from 0.10 to 0.90 (epoch 1's best) is 0.50
    assert not _pruned(_study(*junk), 0.4, 0.45)  # no useful trial yet: best among junk


def test_only_rungs_judge():
    study = _study((1.0, [0.90, 0.95, 0.96], DONE))
    assert not _pruned(study, 2.0, 0.90, 0.50)  # epoch 2 is no rung (1, 3)
    assert _pruned(study, 2.0, 0.50, 0.60, 0.70)  # epoch 3 is


@pytest.mark.parametrize(("epochs", "expected"), [
    (1, ()), (2, ()), (3, (1,)), (5, (2,)), (10, (2, 4)), (20, (3, 7)), (27, (1, 3, 9)),
])
def test_rungs_count_back_from_the_full_training(epochs, expected):
    assert rungs(epochs, 3) == expected


def test_a_slow_starter_of_a_short_training_is_not_judged_on_its_first_epoch():
    """5 epochs: the first rung is epoch 2, not 1 (on MNIST, 0.65 after one epoch ended 0.97)."""
    pruner = PRUNERS["pareto"](5, (ACCURACY, LATENCY), validation_labels(1_000_000), 40)
    study = optuna.create_study(directions=["maximize", "minimize"], pruner=pruner)
    study.add_trial(create_trial(values=[0.99, 1.0], user_attrs={
        TrialAttr.LATENCY_MS: 1.0, TrialAttr.HISTORY: _history(0.95, 0.97, 0.98, 0.99, 0.99)}))
    assert not _pruned(study, 2.0, 0.65)
    assert _pruned(study, 2.0, 0.65, 0.90)


def test_the_top_third_of_the_trials_no_dearer_go_on():
    cheaper = [(1.0, [a], DONE) for a in (0.95, 0.90, 0.85, 0.80, 0.75)]
    # With itself, six trials at the rung: the best two go on.
    assert not _pruned(_study(*cheaper), 2.0, 0.92)
    assert _pruned(_study(*cheaper), 2.0, 0.88)
    # Dearer trials are no competitors: the same trial among them goes on.
    dearer = [(9.0, [a], DONE) for a in (0.95, 0.90, 0.85, 0.80, 0.75)]
    assert not _pruned(_study(*dearer), 2.0, 0.60)


def test_a_completed_trial_that_stopped_early_competes_with_its_best():
    study = _study((1.0, [0.90, 0.97], DONE))  # early-stopped after 2 epochs
    assert _pruned(study, 2.0, 0.90, 0.92, 0.95)
    running = _study((1.0, [0.90, 0.97], TrialState.PRUNED))  # pruned: it left the race
    assert not _pruned(running, 2.0, 0.10, 0.20, 0.30)


def test_a_trial_without_its_costs_is_never_pruned():
    study = _study((1.0, [0.99], DONE))
    assert not _pruned(study, None, 0.10)


def test_a_trial_trailing_by_less_than_the_validation_noise_goes_on():
    """800 validation images: two standard errors of a difference near 0.97 are 0.017."""
    rival = (1.0, [0.9725], DONE)
    assert not _pruned(_study(rival, examples=800), 2.0, 0.9700)  # two images behind
    assert _pruned(_study(rival, examples=800), 2.0, 0.9500)
    assert _pruned(_study(rival), 2.0, 0.9700)  # with no noise, behind is behind


def test_the_last_epoch_is_no_rung():
    """Stopping a trial at its last epoch would save nothing and lose its result."""
    pruner = PRUNERS["pareto"](3, (ACCURACY, LATENCY), validation_labels(1_000_000), 40)
    study = optuna.create_study(directions=["maximize", "minimize"], pruner=pruner)
    study.add_trial(create_trial(values=[0.99, 1.0], user_attrs={
        TrialAttr.LATENCY_MS: 1.0, TrialAttr.HISTORY: _history(0.9, 0.95, 0.99)}))
    assert _pruned(study, 2.0, 0.5)  # epoch 1 is a rung
    assert not _pruned(study, 2.0, 0.5, 0.6, 0.7)  # epoch 3 is the last


def test_a_trial_that_learns_nothing_is_pruned_however_cheap():
    """No trial is as cheap, but answering one class scores as much (10 classes: 10%)."""
    dear = (5.0, [0.97, 0.98], TrialState.COMPLETE)
    # Epoch 2 is no rung (9 epochs: 1 and 3): the floor of chance alone judges there.
    keras_says = float(np.float32(0.10))
    assert _pruned(_study(dear, examples=800), 1.0, keras_says, keras_says)
    assert _pruned(_study(dear, examples=800), 1.0, 0.09, 0.09)  # stuck on a rarer class
    assert not _pruned(_study(dear, examples=800), 1.0, 0.12, 0.12)  # slow, but learning
    assert _pruned(_study(dear, examples=800), 1.0, *[0.10] * 4)  # any epoch, rung or not
    assert not _pruned(_study(dear, examples=800), 1.0, *[0.10] * 9)  # but the last


def test_the_verdict_names_the_rule_that_pruned():
    done = [(1.0, [0.90, 0.95], DONE), (1.5, [0.91], DONE), (3.0, [0.95], DONE)]
    assert _verdict(_study(*done), 2.0, 0.10) == (
        "no more accurate than always answering the most common class")
    assert _verdict(_study(*done), 2.0, 0.40) == (
        "closer to chance than to the best accuracy at this epoch")
    assert _verdict(_study(*done), 2.0, 0.80) == (
        "behind the top 1 of the 3 trials no dearer than it (itself included)")
    assert _verdict(_study(*done), 2.0, 0.92) is None
