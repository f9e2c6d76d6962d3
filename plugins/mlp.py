"""Multilayer perceptron: dense layers over the flattened input, each half the last's width."""

from __future__ import annotations

import keras
import keras_tuner

from autodl.plugin import HyperModel


class MLP(HyperModel):
    """Multilayer perceptron: dense layers over the flattened input, each half the last's width.

    ``batch_norm`` puts batch normalization between each dense layer and its activation.

    Args:
        input_shape: Shape of one example; any rank (it is flattened).
        num_classes: Number of classes of the softmax output.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__(name="mlp")
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        """Build the uncompiled model for the values in ``hp``."""
        depth = hp.Int("depth", 1, 6)
        units = hp.Int("units", 32, 1024, sampling="log")
        activation = hp.Choice("activation", ["relu", "gelu", "tanh"])
        dropout = hp.Float("dropout", 0.0, 0.9)
        batch_norm = hp.Boolean("batch_norm")
        inputs = keras.Input(self.input_shape)
        x = keras.layers.Flatten()(inputs)
        for i in range(depth):
            width = max(units >> i, 16)
            if batch_norm:
                # Dense → batch normalization → activation, the order of the batch-norm
                # paper: it normalizes what the activation receives; its offset is the bias.
                x = keras.layers.Dense(width, use_bias=False)(x)
                x = keras.layers.BatchNormalization()(x)
                x = keras.layers.Activation(activation)(x)
            else:
                x = keras.layers.Dense(width, activation=activation)(x)
            x = keras.layers.Dropout(dropout)(x)
        outputs = keras.layers.Dense(self.num_classes, activation="softmax")(x)
        return keras.Model(inputs, outputs, name="mlp")
