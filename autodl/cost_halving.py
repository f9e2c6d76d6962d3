"""Successive halving at equal cost: trials are compared when they have spent as much.

Optuna's ``SuccessiveHalvingPruner`` compares trials at equal epochs, so a model a
hundred times dearer than the others is judged after its first epoch against their
first epochs, and trains on. Here a rung is an amount of training work (FLOPs): rung
``k`` is ``reduction_factor ** k`` epochs of the cheapest model seen. A trial crossing a
rung goes on only if its best validation accuracy so far is among the top
``1 / reduction_factor`` of the values every trial had when it had spent that much. A
dear model crosses several rungs in its first epoch, so it meets the cheap models'
later, better epochs at once: it must show its worth early.
"""

from __future__ import annotations

import math

import optuna
from optuna.trial import FrozenTrial, TrialState

_COMPARED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


class CostHalvingPruner(optuna.pruners.BasePruner):
    """Successive halving whose rungs are training FLOPs, not epochs.

    Each trial reports its validation accuracy at step ``epoch`` and records its
    training FLOPs per epoch, before its first epoch, as the user attribute
    ``cost_attr``. A trial without that record is never pruned.

    Args:
        cost_attr: The trial user attribute holding its training FLOPs per epoch.
        reduction_factor: How many times more work each rung stands for; the top
            ``1 / reduction_factor`` of the trials at a rung go on.
    """

    def __init__(self, cost_attr: str, reduction_factor: int = 4) -> None:
        self.cost_attr = cost_attr
        self.reduction_factor = reduction_factor

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        """Whether the trial, at its last reported epoch, falls below a rung it just crossed."""
        step, cost = trial.last_step, trial.user_attrs.get(self.cost_attr)
        if step is None or not cost:
            return False
        others = [
            t for t in study.get_trials(deepcopy=False, states=_COMPARED)
            if t.number != trial.number and t.intermediate_values and t.user_attrs.get(
                self.cost_attr)
        ]
        base = min([cost] + [t.user_attrs[self.cost_attr] for t in others])
        for budget in self._rungs_crossed(base, (step - 1) * cost, step * cost):
            value = _value_within(trial, budget, cost)
            competing = [value] + [
                _value_within(t, budget, t.user_attrs[self.cost_attr]) for t in others
                if t.last_step * t.user_attrs[self.cost_attr] >= budget
            ]
            # As in Optuna's successive halving: with fewer than reduction_factor
            # trials at a rung, only the best goes on.
            keep = max(len(competing) // self.reduction_factor, 1)
            if value < sorted(competing, reverse=True)[keep - 1]:
                return True
        return False

    def _rungs_crossed(self, base: float, before: float, after: float) -> list[float]:
        """The rung budgets in ``(before, after]``, lowest first."""
        if after < base:
            return []
        highest = int(math.floor(math.log(after / base, self.reduction_factor) + 1e-9))
        budgets = [base * self.reduction_factor ** k for k in range(highest + 1)]
        return [budget for budget in budgets if budget > before]


def _value_within(trial: FrozenTrial, budget: float, cost: float) -> float:
    """The trial's best value among the epochs it finished within ``budget`` (or its first)."""
    epochs = max(int(budget // cost), 1)
    values = [v for step, v in trial.intermediate_values.items() if step <= epochs]
    return max(values) if values else -math.inf
