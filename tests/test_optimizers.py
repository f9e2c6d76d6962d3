"""The optimizer table: every name makes its Keras optimizer with decoupled weight decay."""

from __future__ import annotations

import keras

from autodl.config import TRAINING_SPACE
from autodl.optimizers import OPTIMIZERS


def test_every_optimizer_is_searched_and_takes_weight_decay():
    assert TRAINING_SPACE["optimizer"].values == tuple(OPTIMIZERS)
    for name, make in OPTIMIZERS.items():
        optimizer = make(0.01, None)
        assert isinstance(optimizer, keras.Optimizer), name
        assert optimizer.weight_decay is None
        assert make(0.01, 1e-4).weight_decay == 1e-4
    assert isinstance(OPTIMIZERS["sgd"](0.1, None), keras.optimizers.SGD)
    assert OPTIMIZERS["sgd"](0.1, None).momentum == 0.9
