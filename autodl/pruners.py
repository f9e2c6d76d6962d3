"""The Optuna pruners that ``--pruner`` names: one table from name to factory.

A trial reports its validation accuracy after every epoch, so Optuna's pruners count
epochs; ``sha`` (the default) counts training FLOPs instead (:mod:`autodl.cost_halving`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna

#: Makes a pruner for trials of at most ``epochs`` epochs.
PrunerFactory = Callable[[int], "optuna.pruners.BasePruner"]


def _cost_halving(epochs: int) -> optuna.pruners.BasePruner:
    from autodl.cost_halving import CostHalvingPruner
    from autodl.storage import TrialAttr

    return CostHalvingPruner(TrialAttr.EPOCH_FLOPS)


def _successive_halving(epochs: int) -> optuna.pruners.BasePruner:
    import optuna

    return optuna.pruners.SuccessiveHalvingPruner(min_resource=1)


def _hyperband(epochs: int) -> optuna.pruners.BasePruner:
    import optuna

    return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs)


def _median(epochs: int) -> optuna.pruners.BasePruner:
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)


def _none(epochs: int) -> optuna.pruners.BasePruner:
    import optuna

    return optuna.pruners.NopPruner()


#: ``--pruner`` NAME: its factory. The first is the default.
PRUNERS: dict[str, PrunerFactory] = {
    "sha": _cost_halving,
    "sha-epochs": _successive_halving,
    "hyperband": _hyperband,
    "median": _median,
    "none": _none,
}
