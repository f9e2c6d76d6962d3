"""What a trial costs, known before it trains: its model's FLOPs, and the cap for the task.

A model's cost is its forward pass's floating-point operations per example, counted
from its weights and output shapes (each kernel's multiply-adds at every output
position). Elementwise work (activations, pooling, normalization) is left out: it is
small beside the convolutions and dense layers that decide a trial's time. Training an
epoch costs about three forward passes (forward, and the two products of the backward
pass) per example.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras

#: The most forward FLOPs per example a default search space admits, per input value
#: (pixel and channel). 28x28x1 images get about 78 MFLOPs, the size of a three-block
#: KerasTuner-tutorial CNN with 64 filters doubling, and a tenth of the dearest model the
#: old unscaled ``cnn`` space could build (benchmarks/RESULTS.md, time to accuracy).
FLOPS_PER_INPUT_VALUE = 100_000
#: Forward-pass equivalents of one training step on one example.
TRAINING_PASSES = 3


def forward_flops(model: keras.Model) -> int:
    """Floating-point operations of one example's forward pass (nested models included).

    Every weight of rank 2 or more is a kernel: it costs one multiply-add per entry at
    each output position of its layer (a convolution's pixels, a dense layer's rows).
    """
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += forward_flops(layer)
            continue
        kernels = [w for w in layer.weights if len(w.shape) >= 2]
        if not kernels:
            continue
        try:
            shape = layer.output.shape
        except (AttributeError, ValueError):  # a layer never called in a graph
            continue
        positions = math.prod(d or 1 for d in shape[1:-1])
        total += sum(2 * math.prod(w.shape) * positions for w in kernels)
    return total


def flops_cap(input_shape: tuple[int, ...]) -> int:
    """The most forward FLOPs per example that default search spaces admit for a task."""
    return FLOPS_PER_INPUT_VALUE * math.prod(input_shape)


def epoch_flops(model_flops: int, examples: int) -> int:
    """Training FLOPs of one epoch over ``examples`` examples."""
    return TRAINING_PASSES * model_flops * examples


#: How far beyond a task's default cap (:func:`flops_cap`) a widened space may go before
#: a configuration is pruned untrained as too dear for the task.
HARD_CAP_FACTOR = 4
#: No model under this is refused: a transfer-learning plugin upsamples small images to
#: its network's size (``mobilenetv2`` on 8x8 digits: about 110 MFLOPs).
HARD_CAP_FLOOR = 1_000_000_000


class CostLimit:
    """Which configurations are too dear to train, judged from the built model alone.

    Args:
        max_flops: The most forward FLOPs per example a trained model may have.
    """

    def __init__(self, max_flops: int) -> None:
        self.max_flops = max_flops

    @classmethod
    def for_task(cls, input_shape: tuple[int, ...]) -> CostLimit:
        """The limit for a task: :data:`HARD_CAP_FACTOR` times its default cap (or the floor)."""
        return cls(max(HARD_CAP_FACTOR * flops_cap(input_shape), HARD_CAP_FLOOR))

    def excess(self, flops: int) -> float:
        """How far over the limit a model is, as Optuna constraints read it (<= 0: within)."""
        return flops / self.max_flops - 1

    def problem(self, flops: int) -> str | None:
        """Why a model of ``flops`` is too dear to train, or None."""
        if flops <= self.max_flops:
            return None
        return (f"too costly: {flops / 1e6:,.0f} MFLOPs per example, over this task's "
                f"limit of {self.max_flops / 1e6:,.0f}")
