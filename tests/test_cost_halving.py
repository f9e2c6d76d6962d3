"""Successive halving at equal cost, on synthetic trials: no training."""

from __future__ import annotations

from types import SimpleNamespace

import optuna
import pytest
from conftest import validation_labels
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from autodl.config import DEFAULT_TRIALS, TuneConfig
from autodl.cost_halving import hyperband_brackets
from autodl.objectives import ACCURACY
from autodl.pruners import PRUNERS
from autodl.storage import TrialAttr
from autodl.tuner import make_pruner

#: One model's validation accuracy after each epoch: the same curve for every model.
CURVE = [0.80, 0.88, 0.92, 0.94, 0.95, 0.955, 0.96, 0.962, 0.964, 0.965]
LABELS = validation_labels(800)


def _finished(cost: float, epochs: int = len(CURVE)) -> optuna.trial.FrozenTrial:
    return create_trial(
        state=TrialState.COMPLETE, value=max(CURVE[:epochs]),
        params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)},
        intermediate_values={epoch + 1: CURVE[epoch] for epoch in range(epochs)},
        user_attrs={TrialAttr.EPOCH_FLOPS: cost},
    )


def _study_with_cheap_trials(n: int) -> optuna.Study:
    study = optuna.create_study(direction="maximize",
                                pruner=PRUNERS["sha"](10, (ACCURACY,), LABELS, 30))
    for _ in range(n):
        study.add_trial(_finished(cost=1e9))
    return study


def _pruned_after_first_epoch(study: optuna.Study, cost: float) -> bool:
    trial = study.ask()
    trial.set_user_attr(TrialAttr.EPOCH_FLOPS, cost)
    trial.report(CURVE[0], step=1)
    return trial.should_prune()


def test_a_fifty_times_dearer_trial_at_equal_accuracy_is_stopped():
    study = _study_with_cheap_trials(8)
    assert _pruned_after_first_epoch(study, cost=50e9)


def test_an_equally_cheap_trial_at_equal_accuracy_goes_on():
    study = _study_with_cheap_trials(8)
    assert not _pruned_after_first_epoch(study, cost=1e9)


def test_optunas_epoch_halving_lets_the_dear_trial_train_on():
    """The difference that matters: at equal epochs the dear trial looks as good."""
    pruner = PRUNERS["sha-epochs"](10, (ACCURACY,), LABELS, 30)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for _ in range(8):
        study.add_trial(_finished(cost=1e9))
    assert not _pruned_after_first_epoch(study, cost=50e9)


def test_only_a_trial_sixteen_times_dearer_is_judged_inside_its_first_epoch():
    study = _study_with_cheap_trials(8)
    assert study.pruner.rungs_within_first_epoch(study, 99, cost=8e9) == []
    # The rungs of 1, 4 and 16 cheap epochs lie inside its first epoch.
    assert study.pruner.rungs_within_first_epoch(study, 99, cost=50e9) == [1e9, 4e9, 16e9]


def test_inside_its_first_epoch_a_dear_trial_must_beat_the_cheap_trials_at_equal_cost():
    study = _study_with_cheap_trials(8)
    # After one cheap epoch's FLOPs the cheap trials stood at 0.80; at four, at 0.94.
    assert study.pruner.falls_below(study, 99, 50e9, value=0.5, budgets=[1e9])
    assert not study.pruner.falls_below(study, 99, 50e9, value=0.85, budgets=[1e9])
    assert study.pruner.falls_below(study, 99, 50e9, value=0.85, budgets=[1e9, 4e9])


def _pruned_at_chance(cost: float) -> optuna.trial.FrozenTrial:
    return create_trial(
        state=TrialState.PRUNED, params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)},
        intermediate_values={1: 0.1}, user_attrs={TrialAttr.EPOCH_FLOPS: cost},
    )


def test_a_dear_trial_pruned_after_one_epoch_competes_only_at_the_lowest_rung_it_crossed():
    """Six 50x dearer trials pruned at chance crossed the rungs of 1, 4 and 16 cheap
    epochs in their first epoch; they reached only the first."""
    study = _study_with_cheap_trials(1)
    for _ in range(6):
        study.add_trial(_pruned_at_chance(cost=50e9))
    trial = study.ask()
    trial.set_user_attr(TrialAttr.EPOCH_FLOPS, 1e9)
    # At the lowest rung they count: eight trials, the top two go on, 0.5 is second.
    trial.report(0.5, step=1)
    assert not trial.should_prune()
    # At four cheap epochs only the finished cheap trial competes (0.94 then): the
    # trial must beat it. Counting the six at chance, 0.93 was in the top two.
    for step, value in ((2, 0.88), (3, 0.92), (4, 0.93)):
        trial.report(value, step=step)
    assert trial.should_prune()


def test_a_trial_without_a_recorded_cost_is_never_pruned():
    study = _study_with_cheap_trials(8)
    trial = study.ask()
    trial.report(0.1, step=1)
    assert not trial.should_prune()


def _budget_study(cheap_trials: int) -> optuna.Study:
    """A study run to a time budget, no trial count: its pruner has brackets."""
    study = optuna.create_study(direction="maximize",
                                pruner=PRUNERS["sha"](10, (ACCURACY,), LABELS, None))
    for _ in range(cheap_trials):
        study.add_trial(_finished(cost=1e9))
    return study


def _pruned_on_curve(study: optuna.Study, values: list[float]) -> int | None:
    """The epoch at which a new cheap trial reporting ``values`` is pruned, or ``None``."""
    trial = study.ask()
    trial.set_user_attr(TrialAttr.EPOCH_FLOPS, 1e9)
    for step, value in enumerate(values, start=1):
        trial.report(value, step=step)
        if trial.should_prune():
            return step
    return None


def test_brackets_for_ten_and_twenty_epochs():
    # Rungs of 1 and 4 cheap epochs, and one past the tenth epoch; then 1, 4, 16 and one.
    assert hyperband_brackets(10) == 3
    assert hyperband_brackets(20) == 4


def test_a_budget_study_prunes_its_first_trials_as_a_study_of_the_default_count():
    study = _budget_study(DEFAULT_TRIALS - 1)
    assert _pruned_on_curve(study, [0.5]) == 1
    assert study.pruner.bracket(DEFAULT_TRIALS - 1) == 0


def test_a_budget_study_judges_its_later_trials_in_brackets_of_their_own():
    """A slow starter after the default count skips the first rung, then meets only the
    trials of its bracket."""
    study = _budget_study(DEFAULT_TRIALS)
    assert [study.pruner.bracket(DEFAULT_TRIALS + k) for k in range(4)] == [1, 2, 1, 2]
    slow_start = [0.5, 0.7, 0.85, 0.93, 0.95, 0.96, 0.965, 0.97, 0.97, 0.97]
    # Bracket 1, alone there: it trains on past the rung of 4 cheap epochs.
    assert _pruned_on_curve(study, slow_start) is None
    # Bracket 2 starts past the cheapest model's tenth epoch: all ten epochs.
    assert _pruned_on_curve(study, [0.3] * 10) is None
    # Bracket 1 again: at 4 cheap epochs it meets the slow starter's 0.93, not 0.5 at
    # one epoch against the first trials' 0.80.
    assert _pruned_on_curve(study, [0.5, 0.7, 0.85, 0.90]) == 4
    assert _pruned_on_curve(study, [0.3] * 10) is None


def test_a_study_of_a_trial_count_has_one_bracket():
    study = _study_with_cheap_trials(DEFAULT_TRIALS)
    assert study.pruner.bracket(DEFAULT_TRIALS + 1) == 0
    assert _pruned_on_curve(study, [0.5]) == 1


@pytest.mark.parametrize(("options", "brackets"), [
    ({"budget": "5m"}, 3), ({"budget": "5m", "trials": 50}, 1), ({}, 1)])
def test_the_tuners_pruner_has_brackets_only_for_a_budget_without_a_trial_count(
        options, brackets):
    config = TuneConfig(arch="cnn", epochs=10, **options)
    splits = SimpleNamespace(y_val=LABELS)
    assert make_pruner(config, splits).brackets == brackets
