"""The bridge: KerasTuner's ``HyperParameters`` API answered by an Optuna trial.

A hypermodel's ``build(hp)`` receives :class:`OptunaHyperParameters`. It *is* a
``keras_tuner.HyperParameters`` (conditional scopes, name scopes, ``hp.values``,
defaults all behave as in KerasTuner), except that the first time an active
hyperparameter is registered its value comes from the matching Optuna suggestion
under the same name. Inactive (conditional) hyperparameters are never suggested.

It hooks into KerasTuner through public API only: the declaring methods (``hp.Int``,
``hp.Float``, ``hp.Choice``, ``hp.Boolean``, ``hp.Fixed``), ``space`` and ``values``.
KerasTuner's private ``_register``, which every declaration goes through, would be the
shorter hook, but a KerasTuner release that renamed it would make every trial build
with default values, silently.

Without a trial it answers with defaults, which is how plugins are listed and
checked ("dry builds"), or with the space's low end (a deployment study's second trial).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import keras_tuner
from keras_tuner.engine import hyperparameters as kt

from autodl.config import (
    TRAINING_DEFAULTS,
    Choice,
    Condition,
    Fixed,
    FloatRange,
    IntRange,
    Scalar,
    Space,
    Spec,
    first_value,
)

if TYPE_CHECKING:
    import optuna


def spec_from_keras_tuner(hp: kt.HyperParameter) -> Spec:
    """The search-space spec that matches a KerasTuner hyperparameter.

    Log and reverse-log ranges with a multiplicative ``step``, and reverse-log ranges,
    have no Optuna distribution; they become a choice among KerasTuner's own
    enumeration of their values.
    """
    if isinstance(hp, kt.Fixed):
        return Fixed(hp.value)
    if isinstance(hp, kt.Boolean):
        return Choice((False, True))
    if isinstance(hp, kt.Choice):
        return Choice(tuple(hp.values))
    if isinstance(hp, (kt.Int, kt.Float)):
        continuous_log = hp.sampling == "log" and hp.step in (None, 1)
        if hp.sampling == "linear" or continuous_log:
            if isinstance(hp, kt.Int):
                return IntRange(hp.min_value, hp.max_value, hp.step or 1, continuous_log)
            step = None if continuous_log else hp.step
            return FloatRange(float(hp.min_value), float(hp.max_value), step, continuous_log)
        return Choice(tuple(sorted(set(hp.values))))
    raise TypeError(f"unsupported hyperparameter type {type(hp).__name__} for {hp.name!r}")


def declared_conditions(
    hp: keras_tuner.HyperParameters,
) -> tuple[dict[str, list[Condition]], dict[str, Spec]]:
    """What a build declared: each hyperparameter's conditions, and its spec.

    Args:
        hp: The hyperparameters after a build (e.g. a dry build with defaults).

    Returns:
        The conditions (``hp.conditional_scope``) of the conditional hyperparameters, and
        every hyperparameter's declared spec, by name.
    """
    conditions: dict[str, list[Condition]] = {}
    declared: dict[str, Spec] = {}
    for hyperparameter in hp.space:
        declared.setdefault(hyperparameter.name, spec_from_keras_tuner(hyperparameter))
        if hyperparameter.conditions:
            conditions.setdefault(hyperparameter.name, [
                (condition.name, tuple(condition.values))
                for condition in hyperparameter.conditions
            ])
    return conditions, declared


def _unsupported(method: str):
    def refuse(self: OptunaHyperParameters, *args: Any, **kwargs: Any) -> None:
        raise TypeError(f"hp.{method}() is not supported when autodl runs a hypermodel")

    return refuse


class OptunaHyperParameters(keras_tuner.HyperParameters):
    """``keras_tuner.HyperParameters`` whose values are suggested by an Optuna trial.

    Args:
        space: The user's narrowing of the search space.
        trial: The trial that suggests values; ``None`` for a dry build with defaults.
        low_end: Without a trial: the plugin's numeric hyperparameters (ranges, choices
            of numbers) take their lowest value instead of their default, which in the
            built-in plugins is the smallest model; the others, and the training
            hyperparameters, keep their defaults.

    Attributes:
        specs: The resolved spec of every active hyperparameter seen so far, by name.
    """

    def __init__(self, space: Space, trial: optuna.Trial | None = None,
                 low_end: bool = False) -> None:
        super().__init__()
        self.search_space = space
        self.trial = trial
        self.low_end = low_end
        self.specs: dict[str, Spec] = {}

    def declare(self, name: str, spec: Spec) -> Any:
        """Register a hyperparameter given as a spec (the core's training ones) and value it."""
        return self._choose(name, spec, TRAINING_DEFAULTS.get(name, first_value(spec)))

    def Choice(self, *args: Any, **kwargs: Any) -> Any:
        """KerasTuner's ``hp.Choice``, valued by the trial."""
        return self._declared(super().Choice, *args, **kwargs)

    def Int(self, *args: Any, **kwargs: Any) -> Any:
        """KerasTuner's ``hp.Int``, valued by the trial."""
        return self._declared(super().Int, *args, **kwargs)

    def Float(self, *args: Any, **kwargs: Any) -> Any:
        """KerasTuner's ``hp.Float``, valued by the trial."""
        return self._declared(super().Float, *args, **kwargs)

    def Boolean(self, *args: Any, **kwargs: Any) -> Any:
        """KerasTuner's ``hp.Boolean``, valued by the trial."""
        return self._declared(super().Boolean, *args, **kwargs)

    def Fixed(self, *args: Any, **kwargs: Any) -> Any:
        """KerasTuner's ``hp.Fixed``, valued by the trial (a user's setting may narrow it)."""
        return self._declared(super().Fixed, *args, **kwargs)

    def _declared(self, declare: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Declare through KerasTuner's own method, then value what it newly activated.

        KerasTuner gives a hyperparameter its default the first time it is registered
        active; that one (the last of ``space``, and new to ``values``) takes the
        trial's suggestion instead. Seen before, or inactive, it keeps KerasTuner's answer.
        """
        known = len(self.values)
        value = declare(*args, **kwargs)
        if len(self.values) > known:
            hp = self.space[-1]
            value = self._choose(hp.name, spec_from_keras_tuner(hp), hp.default, self.low_end)
        return value

    def _choose(self, name: str, declared: Spec, default: Any, lowest: bool = False) -> Any:
        spec = self.search_space.resolve(name, declared)
        self.specs[name] = spec
        if self.trial is None:
            value = _lowest(spec) if lowest else None
            if value is None:
                value = default if spec.contains(default) else first_value(spec)
        else:
            value = _suggest(self.trial, name, spec)
        self.values[name] = value
        return value

    # These would replace suggested values with ones Optuna never saw.
    merge = _unsupported("merge")
    ensure_active_values = _unsupported("ensure_active_values")


def optuna_params(hp: OptunaHyperParameters) -> dict[str, Any]:
    """The Optuna parameters that would make a trial build with ``hp``'s values.

    The inverse of the suggestions: fixed values are no parameters, and a "0, or a
    range" value is two (``NAME_enabled``, then ``NAME`` when enabled).
    """
    params: dict[str, Any] = {}
    for name, spec in hp.specs.items():
        value = hp.values[name]
        if isinstance(spec, Fixed):
            continue
        if isinstance(spec, FloatRange) and spec.zero:
            params[f"{name}_enabled"] = value != 0
            if value == 0:
                continue
        params[name] = value
    return params


def _lowest(spec: Spec) -> Scalar | None:
    """A numeric spec's lowest value (0 where a range allows it); None for other specs."""
    if isinstance(spec, (IntRange, FloatRange)):
        return first_value(spec)
    if isinstance(spec, Choice) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in spec.values
    ):
        return min(spec.values)
    return None


def _suggest(trial: optuna.Trial, name: str, spec: Spec) -> Any:
    """Ask the trial for a value of ``spec`` under ``name``."""
    if isinstance(spec, Fixed):
        return spec.value
    if isinstance(spec, Choice):
        return trial.suggest_categorical(name, list(spec.values))
    if isinstance(spec, IntRange):
        return trial.suggest_int(name, spec.low, spec.high, step=spec.step, log=spec.log)
    # "0, or a log range" is two decisions: whether to use it, then how much.
    if spec.zero and not trial.suggest_categorical(f"{name}_enabled", [False, True]):
        return 0.0
    return trial.suggest_float(name, spec.low, spec.high, step=spec.step, log=spec.log)
