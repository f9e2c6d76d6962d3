"""Successive halving for multi-objective studies: a trial meets the trials no dearer than it.

Optuna cannot prune a multi-objective trial (``Trial.report`` raises). Here the other
objectives (parameters, size, latency) are known before the first epoch, so a trial can
only end on the Pareto front if no trial at least as cheap on every one of them is more
accurate. The rungs count back from the full training, as in Hyperband's brackets: a
``reduction_factor``-th of the epochs, its square, ... rounded up (5 epochs: 2; 10: 2
and 4; 20: 3 and 7). Rungs counted up from epoch 1 (1, 3, 9) judged a 5-epoch trial
after its first epoch, and on real MNIST that cut two slow starters of the front (0.86
and 0.65 after one epoch, 0.98 and 0.97 after five; benchmarks/RESULTS.md). At a rung a
trial goes on unless its best validation accuracy so far trails the top
``1 / reduction_factor`` of those the trials no dearer than it had at that epoch by more
than the noise of a validation accuracy: ``noise_margin`` standard errors of the
difference of two accuracies measured on the validation set's examples. Without that
margin, one or two validation images decided: replayed on a real study (MNIST, 800
validation images), plain successive halving among the trials no dearer cut half of
the Pareto front, the margin none of it. The cheapest trials have no competitors and
always go on, so the front's cheap end is never pruned away, as successive halving on
accuracy alone would do, unless it learns nothing: a trial no more accurate than always
answering the most common class (a model stuck on one class scores that class's share)
is pruned after any epoch but the last, however cheap. On MNIST such cheap trials
trained all their epochs and sat on the front at 10% accuracy. Nor may cheap trials
keep each other going: at a rung, a trial closer to chance than to the best accuracy
any trial had at that epoch (``useful_share`` of the way from one to the other) is
pruned, however cheap. On MNIST the fastest configurations (a global-average head on
16 filters) ended at 12-36% among rivals as poor, held the front's fast end, and drew
the sampler to ten more such trials in 40.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

_COMPARED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)


class ParetoHalvingPruner(optuna.pruners.BasePruner):
    """Successive halving of accuracy among the trials no dearer on the other objectives.

    Each trial records, as user attributes, its per-epoch history (a list of records
    holding ``accuracy_key``) after every epoch, and its value of each other objective
    (lower is better) before its first epoch. A trial without those is never pruned.

    Args:
        cost_attrs: The trial user attributes holding the other objectives' values.
        history_attr: The trial user attribute holding the per-epoch history.
        accuracy_key: The history records' accuracy (higher is better).
        examples: How many examples the accuracy is measured on (its noise).
        epochs: The most epochs a trial trains: its last epoch is no rung, since
            stopping there would save nothing and lose a finished trial.
        reduction_factor: Rungs are this many times fewer epochs than the next (the
            first rung after them: the full training), and the top
            ``1 / reduction_factor`` of a rung's comparable trials go on.
        noise_margin: By how many standard errors a trial must trail to be pruned.
        chance: The accuracy of always answering the validation set's most common class.
        useful_share: At a rung, a trial must be at least this share of the way from
            ``chance`` to the best accuracy of any trial at that epoch.
    """

    def __init__(self, cost_attrs: Sequence[str], history_attr: str, accuracy_key: str,
                 examples: int, epochs: int, reduction_factor: int = 3,
                 noise_margin: float = 2.0, chance: float = 0.0,
                 useful_share: float = 0.5) -> None:
        self.cost_attrs = tuple(cost_attrs)
        self.history_attr = history_attr
        self.accuracy_key = accuracy_key
        self.examples = examples
        self.epochs = epochs
        self.reduction_factor = reduction_factor
        self.rungs = rungs(epochs, reduction_factor)
        self.noise_margin = noise_margin
        self.chance = chance
        self.useful_share = useful_share

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        """Whether the trial, at the epoch it just finished, falls below its rung."""
        return self.verdict(study, trial) is not None

    def verdict(self, study: optuna.Study, trial: FrozenTrial) -> str | None:
        """Why the trial, at the epoch it just finished, is pruned; ``None`` if it goes on."""
        epoch = len(trial.user_attrs.get(self.history_attr) or [])
        costs = self._costs(trial)
        if costs is None or not 1 <= epoch < self.epochs:
            return None
        value = self._accuracy_at(trial, epoch)
        # Keras reports accuracy in float32: within half an example of chance is chance.
        if value <= self.chance + 0.5 / self.examples:
            # It learns nothing: no place on any front worth having.
            return "no more accurate than always answering the most common class"
        if epoch not in self.rungs:
            return None
        competing, best = [value], value
        for other in study.get_trials(deepcopy=False, states=_COMPARED):
            other_costs = self._costs(other)
            trained = len(other.user_attrs.get(self.history_attr) or [])
            # A completed trial that stopped early keeps its best value at later rungs.
            reached = trained >= epoch or (other.state == TrialState.COMPLETE and trained)
            if other.number == trial.number or other_costs is None or not reached:
                continue
            accuracy = self._accuracy_at(other, epoch)
            best = max(best, accuracy)
            if all(o <= c for o, c in zip(other_costs, costs, strict=True)):
                competing.append(accuracy)
        if value < self.chance + self.useful_share * (best - self.chance):
            return "closer to chance than to the best accuracy at this epoch"
        # As in Optuna's successive halving: with fewer than reduction_factor trials at
        # a rung, only the best goes on.
        keep = max(len(competing) // self.reduction_factor, 1)
        bar = sorted(competing, reverse=True)[keep - 1]
        if value < bar - self.noise_margin * self._standard_error(value, bar):
            return (f"behind the top {keep} of the {len(competing)} trials no dearer than it "
                    "(itself included)")
        return None

    def _standard_error(self, a: float, b: float) -> float:
        """The standard error of the difference of two accuracies (binomial, independent)."""
        return math.sqrt((a * (1 - a) + b * (1 - b)) / self.examples)

    def _costs(self, trial: FrozenTrial) -> list[float] | None:
        costs = [trial.user_attrs.get(attr) for attr in self.cost_attrs]
        return None if any(cost is None for cost in costs) else costs

    def _accuracy_at(self, trial: FrozenTrial, epoch: int) -> float:
        """The trial's best accuracy among its first ``epoch`` epochs."""
        history = trial.user_attrs.get(self.history_attr) or []
        return max(record[self.accuracy_key] for record in history[:epoch])


def rungs(epochs: int, reduction_factor: int) -> tuple[int, ...]:
    """The epochs at which a trial of ``epochs`` epochs meets its rivals, earliest first.

    ``ceil(epochs / reduction_factor ** k)`` for ``k`` = 1, 2, ... while that fraction is
    at least one epoch: 5 epochs give (2,), 10 give (2, 4), 2 give none.
    """
    found: list[int] = []
    fraction = epochs / reduction_factor
    while fraction >= 1:
        found.insert(0, math.ceil(fraction))
        fraction /= reduction_factor
    return tuple(found)
