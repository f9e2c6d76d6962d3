"""The Optuna pruners that ``--pruner`` names: one table from name to factory.

A trial reports its validation accuracy after every epoch, so Optuna's pruners count
epochs; ``sha`` (the default) counts training FLOPs instead (:mod:`autodl.cost_halving`).
Optuna's pruners judge one objective; a study of several is pruned by ``pareto``
(:mod:`autodl.pareto_halving`), its default, or not at all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from autodl.config import DEFAULT_TRIALS
from autodl.errors import AutodlError

if TYPE_CHECKING:
    import numpy as np
    import optuna

#: Makes a pruner for trials of at most ``epochs`` epochs, tuned for ``objectives``, whose
#: validation accuracy is measured on ``validation_labels`` (class indices), in a study of
#: ``trial_limit`` trials (``None``: as many as a time budget allows).
PrunerFactory = Callable[[int, tuple[str, ...], "np.ndarray", "int | None"],
                         "optuna.pruners.BasePruner"]


def _one_objective(name: str, objectives: tuple[str, ...]) -> None:
    """Refuse a pruner of one objective for a study of several."""
    if len(objectives) > 1:
        raise AutodlError(f"--pruner {name} judges one objective; for --objective "
                          f"{','.join(objectives)} use pareto (the default) or none")


def _cost_halving(epochs: int, objectives: tuple[str, ...],
                  validation_labels: np.ndarray,
                  trial_limit: int | None) -> optuna.pruners.BasePruner:
    from autodl.cost_halving import CostHalvingPruner, hyperband_brackets
    from autodl.storage import TrialAttr

    _one_objective("sha", objectives)
    if trial_limit is not None:
        return CostHalvingPruner(TrialAttr.EPOCH_FLOPS)
    # A time budget with no trial count: its first trials are pruned as in a run of the
    # default count, the later ones in brackets that judge them later.
    return CostHalvingPruner(TrialAttr.EPOCH_FLOPS, brackets=hyperband_brackets(epochs),
                             bracketed_from=DEFAULT_TRIALS)


def _pareto_halving(epochs: int, objectives: tuple[str, ...],
                    validation_labels: np.ndarray,
                    trial_limit: int | None) -> optuna.pruners.BasePruner:
    import numpy as np

    from autodl.pareto_halving import ParetoHalvingPruner
    from autodl.storage import OBJECTIVE_ATTRS, TrialAttr
    from autodl.trial import MONITOR

    if len(objectives) == 1:
        raise AutodlError("--pruner pareto is for several objectives (e.g. --objective "
                          "accuracy,latency); for accuracy alone use sha (the default)")
    examples = len(validation_labels)
    return ParetoHalvingPruner([OBJECTIVE_ATTRS[name] for name in objectives[1:]],
                               TrialAttr.HISTORY, MONITOR, examples, epochs,
                               chance=np.bincount(validation_labels).max() / examples)


def _successive_halving(epochs: int, objectives: tuple[str, ...],
                        validation_labels: np.ndarray,
                        trial_limit: int | None) -> optuna.pruners.BasePruner:
    import optuna

    _one_objective("sha-epochs", objectives)
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=1)


def _hyperband(epochs: int, objectives: tuple[str, ...],
               validation_labels: np.ndarray,
               trial_limit: int | None) -> optuna.pruners.BasePruner:
    import optuna

    _one_objective("hyperband", objectives)
    return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs)


def _median(epochs: int, objectives: tuple[str, ...],
            validation_labels: np.ndarray,
            trial_limit: int | None) -> optuna.pruners.BasePruner:
    import optuna

    _one_objective("median", objectives)
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)


def _none(epochs: int, objectives: tuple[str, ...],
          validation_labels: np.ndarray,
          trial_limit: int | None) -> optuna.pruners.BasePruner:
    import optuna

    return optuna.pruners.NopPruner()


#: ``--pruner`` NAME: its factory. The first is the default for one objective, ``pareto``
#: for several.
PRUNERS: dict[str, PrunerFactory] = {
    "sha": _cost_halving,
    "pareto": _pareto_halving,
    "sha-epochs": _successive_halving,
    "hyperband": _hyperband,
    "median": _median,
    "none": _none,
}
