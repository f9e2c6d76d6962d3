"""Convolutional network: blocks of two convolutions with pooling between, then a dense head."""

from __future__ import annotations

import keras
import keras_tuner


def pooling_steps(height: int, width: int) -> int:
    """How many 2x2 poolings an image can take while keeping at least 2x2 pixels."""
    side, steps = min(height, width), 0
    while side >= 4:
        side //= 2
        steps += 1
    return steps


class CNN(keras_tuner.HyperModel):
    """Convolutional network: blocks of two convolutions with pooling between, then a dense head.

    Filters double after each pooling. ``depth`` counts convolution layers; its range
    depends on how many times the input can be pooled.

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
        depth = hp.Int("depth", 1, min(2 * (self.max_pools + 1), 8))
        filters = hp.Choice("filters", [16, 32, 64])
        kernel_size = hp.Choice("kernel_size", [3, 5])
        head = hp.Choice("head", ["flatten", "global_average"])
        units = hp.Choice("units", [64, 128, 256])
        dropout = hp.Float("dropout", 0.0, 0.9)
        inputs = keras.Input(self.input_shape)
        x = inputs
        for layer in range(depth):
            block = layer // 2
            x = keras.layers.Conv2D(
                min(filters << block, 256), kernel_size, padding="same", activation="relu"
            )(x)
            if layer % 2 == 1 and block < self.max_pools and layer < depth - 1:
                x = keras.layers.MaxPooling2D()(x)
        if head == "flatten":
            x = keras.layers.Flatten()(x)
        else:
            x = keras.layers.GlobalAveragePooling2D()(x)
        x = keras.layers.Dropout(dropout)(x)
        x = keras.layers.Dense(units, activation="relu")(x)
        x = keras.layers.Dropout(dropout)(x)
        outputs = keras.layers.Dense(self.num_classes, activation="softmax")(x)
        return keras.Model(inputs, outputs, name="cnn")
