"""Successive halving at equal cost: trials are compared when they have spent as much.

Optuna's ``SuccessiveHalvingPruner`` compares trials at equal epochs, so a model a
hundred times dearer than the others is judged after its first epoch against their
first epochs, and trains on. Here a rung is an amount of training work (FLOPs): rung
``k`` is ``reduction_factor ** k`` epochs of the cheapest model seen. A trial crossing a
rung goes on only if its best validation accuracy so far is among the top
``1 / reduction_factor`` of the values the trials that reached that rung had there. A
dear model crosses several rungs in its first epoch, so it meets the cheap models'
later, better epochs at once: it must show its worth early. A model sixteen times
dearer than the cheapest is judged at the rungs inside its first epoch too, from its
validation accuracy then (:meth:`CostHalvingPruner.rungs_within_first_epoch`).

As in successive halving, a rung's competitors are the trials that reached it. A dear
trial pruned after an epoch that crossed several rungs never trained past the lowest of
them, so it competes there and not above. Counted at every rung its first epoch
crossed, the dear models that fail at once (an untrainable learning rate, at chance)
made the higher rungs' top ``1 / reduction_factor`` lenient: on the MNIST benchmark,
cheap trials that tied with the best trained all ten epochs.
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
        others = self._others(study, trial.number)
        base = self._base(cost, others)
        return any(self._below(_value_within(trial, budget, cost), budget, base, others)
                   for budget in self._rungs_crossed(base, (step - 1) * cost, step * cost))

    def rungs_within_first_epoch(self, study: optuna.Study, number: int,
                                 cost: float) -> list[float]:
        """The rungs a dear trial crosses before its first epoch ends, to judge it there.

        Judged only after its first epoch, a model sixteen or more times dearer than the
        cheapest trial has trained that whole epoch before it meets the cheap models'
        rungs (on the MNIST images: 8-10 s where they take 1-3 s). So a trial whose epoch
        costs at least ``reduction_factor ** 2`` times the cheapest trial's epoch is
        judged at each rung inside its first epoch too (:meth:`falls_below`).

        Args:
            study: The study.
            number: The trial's number.
            cost: The trial's training FLOPs per epoch.

        Returns:
            The rung budgets (training FLOPs) inside its first epoch, lowest first; empty
            for a trial less dear.
        """
        base = self._base(cost, self._others(study, number))
        if cost < base * self.reduction_factor ** 2:
            return []
        return [budget for budget in self._rungs_crossed(base, 0, cost) if budget < cost]

    def falls_below(self, study: optuna.Study, number: int, cost: float, value: float,
                    budgets: list[float]) -> bool:
        """Whether ``value`` falls below any of the rungs ``budgets`` (training FLOPs).

        Args:
            study: The study.
            number: The trial's number.
            cost: The trial's training FLOPs per epoch.
            value: Its validation accuracy, reached with no more training than the
                lowest of ``budgets``.
            budgets: The rungs it crossed.
        """
        others = self._others(study, number)
        base = self._base(cost, others)
        return any(self._below(value, budget, base, others) for budget in budgets)

    def _others(self, study: optuna.Study, number: int) -> list[FrozenTrial]:
        """The study's other trials that reported an epoch and recorded their cost."""
        return [
            t for t in study.get_trials(deepcopy=False, states=_COMPARED)
            if t.number != number and t.intermediate_values and t.user_attrs.get(
                self.cost_attr)
        ]

    def _base(self, cost: float, others: list[FrozenTrial]) -> float:
        """The lowest rung: one epoch of the cheapest trial seen."""
        return min([cost] + [t.user_attrs[self.cost_attr] for t in others])

    def _below(self, value: float, budget: float, base: float,
               others: list[FrozenTrial]) -> bool:
        """Whether ``value`` is outside the top ``1 / reduction_factor`` at rung ``budget``."""
        competing = [value] + [
            _value_within(t, budget, t.user_attrs[self.cost_attr]) for t in others
            if self._reached(t, base) >= budget
        ]
        # As in Optuna's successive halving: with fewer than reduction_factor trials at
        # a rung, only the best goes on.
        keep = max(len(competing) // self.reduction_factor, 1)
        return value < sorted(competing, reverse=True)[keep - 1]

    def _reached(self, trial: FrozenTrial, base: float) -> float:
        """The training FLOPs up to which ``trial`` competes at the rungs.

        What it spent; for a pruned trial, the lowest rung its last epoch crossed.
        """
        cost = trial.user_attrs[self.cost_attr]
        spent = trial.last_step * cost
        if trial.state != TrialState.PRUNED:
            return spent
        # Which of the rungs its last epoch crossed it fell below is not recorded; it
        # never trained past the lowest.
        crossed = self._rungs_crossed(base, (trial.last_step - 1) * cost, spent)
        return crossed[0] if crossed else spent

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
