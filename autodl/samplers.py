"""The Optuna samplers that ``--sampler`` names: one table from name to factory.

TPE, random and GP search several objectives as well as one (Optuna's multi-objective
TPE, GP's LogEHVI); CMA-ES searches one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from autodl.errors import AutodlError

if TYPE_CHECKING:
    import optuna

#: Makes a sampler from its seed (``None``: unseeded) for a study of ``objectives``.
SamplerFactory = Callable[[int | None, tuple[str, ...]], "optuna.samplers.BaseSampler"]


def _tpe(seed: int | None, objectives: tuple[str, ...]) -> optuna.samplers.BaseSampler:
    import optuna

    # Multivariate grouped TPE models the conditional parameters (e.g. weight decay on/off).
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)


def _random(seed: int | None, objectives: tuple[str, ...]) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


def _cmaes(seed: int | None, objectives: tuple[str, ...]) -> optuna.samplers.BaseSampler:
    import optuna

    if len(objectives) > 1:
        raise AutodlError(f"--sampler cmaes searches one objective; for --objective "
                          f"{','.join(objectives)} use tpe (the default), random or gp")

    return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)


def _gp(seed: int | None, objectives: tuple[str, ...]) -> optuna.samplers.BaseSampler:
    import optuna

    from autodl._imports import try_import

    try_import("torch", "gp", "the gp sampler")
    return optuna.samplers.GPSampler(seed=seed)


#: ``--sampler`` NAME: its factory. The first is the default.
SAMPLERS: dict[str, SamplerFactory] = {
    "tpe": _tpe,
    "random": _random,
    "cmaes": _cmaes,
    "gp": _gp,
}
