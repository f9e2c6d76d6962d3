"""The Keras optimizers that the ``optimizer`` hyperparameter names: one table.

Every one takes the optimizer's own decoupled ``weight_decay``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import keras

#: Makes an optimizer from a learning rate (a number or a Keras schedule) and a weight
#: decay (``None`` for none).
OptimizerFactory = Callable[[Any, "float | None"], "keras.Optimizer"]


def _adam(learning_rate: Any, weight_decay: float | None) -> keras.Optimizer:
    import keras

    return keras.optimizers.Adam(learning_rate, weight_decay=weight_decay)


def _sgd(learning_rate: Any, weight_decay: float | None) -> keras.Optimizer:
    import keras

    return keras.optimizers.SGD(learning_rate, momentum=0.9, weight_decay=weight_decay)


def _rmsprop(learning_rate: Any, weight_decay: float | None) -> keras.Optimizer:
    import keras

    return keras.optimizers.RMSprop(learning_rate, weight_decay=weight_decay)


def _adagrad(learning_rate: Any, weight_decay: float | None) -> keras.Optimizer:
    import keras

    return keras.optimizers.Adagrad(learning_rate, weight_decay=weight_decay)


#: ``optimizer`` value: its factory. SGD uses momentum 0.9.
OPTIMIZERS: dict[str, OptimizerFactory] = {
    "adam": _adam,
    "sgd": _sgd,
    "rmsprop": _rmsprop,
    "adagrad": _adagrad,
}
