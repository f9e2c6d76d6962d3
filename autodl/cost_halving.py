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

With ``brackets`` above one, the trials after the first ``bracketed_from`` are judged
later, as in Hyperband's brackets: bracket ``b`` skips the ``b`` lowest rungs, and its
trials compete only with each other. Pruned at the lowest rungs, a late bloomer never
shows its worth; a study with time for more trials than the first ``bracketed_from``
spends it on training later trials further.
"""

from __future__ import annotations

import math

import optuna
from optuna.trial import FrozenTrial, TrialState

_COMPARED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)

#: How many times more work each rung stands for.
REDUCTION_FACTOR = 4


def hyperband_brackets(epochs: int, reduction_factor: int = REDUCTION_FACTOR) -> int:
    """How many brackets Hyperband would make for trials of at most ``epochs`` epochs.

    One per rung that the cheapest model crosses in ``epochs`` epochs, and a last one whose
    lowest rung lies past them: there the cheapest models train all their epochs.
    """
    return int(math.floor(math.log(epochs, reduction_factor) + 1e-9)) + 2


class CostHalvingPruner(optuna.pruners.BasePruner):
    """Successive halving whose rungs are training FLOPs, not epochs.

    Each trial reports its validation accuracy at step ``epoch`` and records its
    training FLOPs per epoch, before its first epoch, as the user attribute
    ``cost_attr``. A trial without that record is never pruned.

    Args:
        cost_attr: The trial user attribute holding its training FLOPs per epoch.
        reduction_factor: How many times more work each rung stands for; the top
            ``1 / reduction_factor`` of the trials at a rung go on.
        brackets: How many brackets (:meth:`bracket`); one: every trial competes at
            every rung.
        bracketed_from: The first trial number not in bracket 0.
    """

    def __init__(self, cost_attr: str, reduction_factor: int = REDUCTION_FACTOR,
                 brackets: int = 1, bracketed_from: int = 0) -> None:
        self.cost_attr = cost_attr
        self.reduction_factor = reduction_factor
        self.brackets = brackets
        self.bracketed_from = bracketed_from

    def bracket(self, number: int) -> int:
        """The bracket of trial ``number``: how many of the lowest rungs it skips.

        The trials before ``bracketed_from`` are in bracket 0, judged from the first
        rung on; the later ones take the other brackets in turn.
        """
        if self.brackets == 1 or number < self.bracketed_from:
            return 0
        return 1 + (number - self.bracketed_from) % (self.brackets - 1)

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        """Whether the trial, at its last reported epoch, falls below a rung it just crossed."""
        step, cost = trial.last_step, trial.user_attrs.get(self.cost_attr)
        if step is None or not cost:
            return False
        lowest, peers = self._bracket_of(study, trial.number, cost)
        return any(self._below(_value_within(trial, budget, cost), budget, lowest, peers)
                   for budget in self._rungs_crossed(lowest, (step - 1) * cost, step * cost))

    def rungs_within_first_epoch(self, study: optuna.Study, number: int,
                                 cost: float) -> list[float]:
        """The rungs a dear trial crosses before its first epoch ends, to judge it there.

        Judged only after its first epoch, a model sixteen or more times dearer than the
        cheapest trial has trained that whole epoch before it meets the cheap models'
        rungs (on the MNIST images: 8-10 s where they take 1-3 s). So a trial whose epoch
        costs at least ``reduction_factor ** 2`` times its bracket's lowest rung (in
        bracket 0, the cheapest trial's epoch) is judged at each rung inside its first
        epoch too (:meth:`falls_below`).

        Args:
            study: The study.
            number: The trial's number.
            cost: The trial's training FLOPs per epoch.

        Returns:
            The rung budgets (training FLOPs) inside its first epoch, lowest first; empty
            for a trial less dear.
        """
        lowest, _ = self._bracket_of(study, number, cost)
        if cost < lowest * self.reduction_factor ** 2:
            return []
        return [budget for budget in self._rungs_crossed(lowest, 0, cost) if budget < cost]

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
        lowest, peers = self._bracket_of(study, number, cost)
        return any(self._below(value, budget, lowest, peers) for budget in budgets)

    def _bracket_of(self, study: optuna.Study, number: int,
                    cost: float) -> tuple[float, list[FrozenTrial]]:
        """Trial ``number``'s lowest rung, and the other trials of its bracket.

        Rung ``k`` of every bracket is ``reduction_factor ** k`` epochs of the cheapest
        trial seen (the study's other trials that reported an epoch and recorded their
        cost); bracket ``b`` starts at rung ``b``.
        """
        others = [
            t for t in study.get_trials(deepcopy=False, states=_COMPARED)
            if t.number != number and t.intermediate_values and t.user_attrs.get(
                self.cost_attr)
        ]
        cheapest = min([cost] + [t.user_attrs[self.cost_attr] for t in others])
        bracket = self.bracket(number)
        peers = [t for t in others if self.bracket(t.number) == bracket]
        return cheapest * self.reduction_factor ** bracket, peers

    def _below(self, value: float, budget: float, lowest: float,
               peers: list[FrozenTrial]) -> bool:
        """Whether ``value`` is outside the top ``1 / reduction_factor`` at rung ``budget``."""
        competing = [value] + [
            _value_within(t, budget, t.user_attrs[self.cost_attr]) for t in peers
            if self._reached(t, lowest) >= budget
        ]
        # As in Optuna's successive halving: with fewer than reduction_factor trials at
        # a rung, only the best goes on.
        keep = max(len(competing) // self.reduction_factor, 1)
        return value < sorted(competing, reverse=True)[keep - 1]

    def _reached(self, trial: FrozenTrial, lowest: float) -> float:
        """The training FLOPs up to which ``trial`` competes at the rungs from ``lowest`` up.

        What it spent; for a pruned trial, the lowest rung its last epoch crossed.
        """
        cost = trial.user_attrs[self.cost_attr]
        spent = trial.last_step * cost
        if trial.state != TrialState.PRUNED:
            return spent
        # Which of the rungs its last epoch crossed it fell below is not recorded; it
        # never trained past the lowest.
        crossed = self._rungs_crossed(lowest, (trial.last_step - 1) * cost, spent)
        return crossed[0] if crossed else spent

    def _rungs_crossed(self, lowest: float, before: float, after: float) -> list[float]:
        """The rung budgets from ``lowest`` up in ``(before, after]``, lowest first."""
        if after < lowest:
            return []
        highest = int(math.floor(math.log(after / lowest, self.reduction_factor) + 1e-9))
        budgets = [lowest * self.reduction_factor ** k for k in range(highest + 1)]
        return [budget for budget in budgets if budget > before]


def _value_within(trial: FrozenTrial, budget: float, cost: float) -> float:
    """The trial's best value among the epochs it finished within ``budget`` (or its first)."""
    epochs = max(int(budget // cost), 1)
    values = [v for step, v in trial.intermediate_values.items() if step <= epochs]
    return max(values) if values else -math.inf
