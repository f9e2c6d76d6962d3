"""Convolutional network: convolutions each followed by pooling, then a dense head."""

from __future__ import annotations

import functools
from collections.abc import Callable

import keras
import keras_tuner

from autodl.augmentation import augment
from autodl.plugin import HyperModel


def pooling_steps(height: int, width: int) -> int:
    """How many 2x2 poolings an image can take while keeping at least 2x2 pixels."""
    side, steps = min(height, width), 0
    while side >= 4:
        side //= 2
        steps += 1
    return steps


class CNN(HyperModel):
    """Convolutional network: convolutions each followed by pooling, then a dense head.

    Each convolution is followed by 2x2 max pooling while the image is at least 4x4
    pixels, and has twice the filters of the one before (at most 256): the classic
    design of the KerasTuner and Keras tutorials. ``depth`` counts convolution layers:
    one more than the input can be pooled, at most. So the dearest model grows with the
    input, not beyond it: a convolution at full resolution is never followed by another
    one there (on 28x28 images that alone was 2.3 M parameters and 400 s a trial).
    ``batch_norm`` puts batch normalization after every convolution and the dense
    layer; ``augment`` (see :mod:`autodl.augmentation`) adds random image augmentation
    after the input.

    Args:
        input_shape: ``(height, width, channels)``.
        num_classes: Number of classes of the softmax output.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__(name="cnn")
        if len(input_shape) != 3:
            raise ValueError(f"cnn needs images (height, width, channels), got {input_shape}")
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.max_pools = pooling_steps(*self.input_shape[:2])

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        """Build the uncompiled model for the values in ``hp``."""
        # Defaults: the first trial of a study trains them (a proven small CNN).
        max_depth = self.max_pools + 1
        depth = hp.Int("depth", 1, max_depth, default=min(3, max_depth))
        filters = hp.Choice("filters", [16, 32, 64], default=32)
        kernel_size = hp.Choice("kernel_size", [3, 5])
        head = hp.Choice("head", ["flatten", "global_average"])
        units = hp.Choice("units", [64, 128, 256], default=128)
        dropout = hp.Float("dropout", 0.0, 0.9, default=0.25)
        batch_norm = hp.Boolean("batch_norm")
        inputs = keras.Input(self.input_shape)
        x = augment(hp, inputs)
        for layer in range(depth):
            conv = functools.partial(
                keras.layers.Conv2D, min(filters << layer, 256), kernel_size, padding="same"
            )
            x = _relu_layer(conv, x, batch_norm)
            if layer < self.max_pools:
                x = keras.layers.MaxPooling2D()(x)
        if head == "flatten":
            x = keras.layers.Flatten()(x)
        else:
            x = keras.layers.GlobalAveragePooling2D()(x)
        x = keras.layers.Dropout(dropout)(x)
        x = _relu_layer(functools.partial(keras.layers.Dense, units), x, batch_norm)
        x = keras.layers.Dropout(dropout)(x)
        outputs = keras.layers.Dense(self.num_classes, activation="softmax")(x)
        return keras.Model(inputs, outputs, name="cnn")


def _relu_layer(
    make: Callable[..., keras.layers.Layer], x: keras.KerasTensor, batch_norm: bool
) -> keras.KerasTensor:
    """Apply the layer ``make(...)`` with ReLU; with ``batch_norm``, normalize before the ReLU.

    Layer → batch normalization → activation is the order of the batch-normalization
    paper and of ``keras.applications``: it normalizes what the activation receives. The
    layer then has no bias: the normalization's learned offset replaces it.
    """
    if not batch_norm:
        return make(activation="relu")(x)
    x = make(use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    return keras.layers.Activation("relu")(x)
