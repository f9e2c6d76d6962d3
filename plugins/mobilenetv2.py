"""MobileNetV2 transfer learning: an ImageNet-trained base, frozen, under a new classifier head."""

from __future__ import annotations

import os
import re
from pathlib import Path

import keras
import keras_tuner

from autodl.augmentation import augment
from autodl.plugin import HyperModel

#: Input sizes Keras publishes ImageNet weights for.
SIZES = (96, 128, 160, 192, 224)
ALPHAS = (0.35, 0.5, 0.75, 1.0)
_WEIGHTS_FILE = re.compile(
    r"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_(?P<alpha>[0-9.]+)_\d+_no_top\.h5"
)


def weights_file_name(alpha: float, size: int) -> str:
    """The standard name of Keras's no-top MobileNetV2 ImageNet weights file."""
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_{size}_no_top.h5"


def _keras_models_dir() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


class MobileNetV2(HyperModel):
    """MobileNetV2 transfer learning: an ImageNet-trained base, frozen, under a new classifier head.

    Inputs are resized to the smallest size with published weights (96..224 pixels),
    grayscale is repeated to three channels, and pixels in [0, 1] are mapped to
    [-1, 1] as ``mobilenet_v2.preprocess_input`` does. With ImageNet weights the top
    ``fine_tune_layers`` layers of the base may be trained too (batch normalization
    stays frozen); with ``weights="none"`` the whole network trains from scratch.
    ``augment`` (see :mod:`autodl.augmentation`) adds random image augmentation right
    after the input, before resizing.

    Args:
        input_shape: ``(height, width, channels)`` with 1 or 3 channels.
        num_classes: Number of classes of the softmax output.
        weights: ``"imagenet"`` (Keras's cache, downloaded when online), ``"none"``, or
            the path of a no-top weights ``.h5`` file; its width multiplier ``alpha``
            is read from the standard file name (else set it with ``--set alpha=``).
    """

    def __init__(
        self, input_shape: tuple[int, ...], num_classes: int, weights: str = "imagenet"
    ) -> None:
        super().__init__(name="mobilenetv2")
        if len(input_shape) != 3 or input_shape[-1] not in (1, 3):
            raise ValueError(f"mobilenetv2 needs RGB or grayscale images, got {input_shape}")
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.size = next((s for s in SIZES if s >= max(input_shape[:2])), SIZES[-1])
        if weights == "none":
            self.weights, self.alphas = None, ALPHAS
        elif weights == "imagenet":
            self.weights, self.alphas = "imagenet", self._imagenet_alphas()
        else:
            if not Path(weights).is_file():
                raise ValueError(f"weights file not found: {weights}")
            match = _WEIGHTS_FILE.fullmatch(Path(weights).name)
            self.weights = str(weights)
            self.alphas = (float(match["alpha"]),) if match else ALPHAS

    def _imagenet_alphas(self) -> tuple[float, ...]:
        """Alphas whose weights are cached; else download the smallest, or explain how."""
        cached = tuple(
            a for a in ALPHAS if (_keras_models_dir() / weights_file_name(a, self.size)).is_file()
        )
        if cached:
            return cached
        try:
            keras.applications.MobileNetV2(
                input_shape=(self.size, self.size, 3), alpha=ALPHAS[0], include_top=False,
                weights="imagenet",
            )
        except Exception:  # offline: urllib's errors, wrapped by Keras in a bare Exception
            raise ValueError(
                f"MobileNetV2 ImageNet weights ({weights_file_name(ALPHAS[0], self.size)}) are "
                f"not in the Keras cache {_keras_models_dir()} and could not be downloaded; "
                "copy the file there, or pass --weights PATH.h5 (a local no-top weights file) "
                "or --weights none"
            ) from None
        finally:
            keras.backend.clear_session()
        return ALPHAS[:1]

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        """Build the uncompiled model for the values in ``hp``."""
        alpha = hp.Choice("alpha", list(self.alphas))
        inputs = keras.Input(self.input_shape)
        x = augment(hp, inputs)  # at the input's own size: cheaper than after resizing
        if self.input_shape[-1] == 1:
            x = keras.layers.Concatenate()([x, x, x])
        if self.input_shape[:2] != (self.size, self.size):
            x = keras.layers.Resizing(self.size, self.size)(x)
        # preprocess_input's mapping of [0, 255] to [-1, 1], for our [0, 1] pixels,
        # as a layer that saves and loads without custom code.
        x = keras.layers.Rescaling(2.0, offset=-1.0)(x)
        base = keras.applications.MobileNetV2(
            input_shape=(self.size, self.size, 3), alpha=alpha, include_top=False,
            weights=self.weights, pooling="avg",
        )
        if self.weights is not None:
            fine_tune = hp.Int("fine_tune_layers", 0, 30, step=10)
            first_trained = len(base.layers) - fine_tune
            for index, layer in enumerate(base.layers):
                layer.trainable = index >= first_trained and not isinstance(
                    layer, keras.layers.BatchNormalization
                )
        # training=False, as in the Keras transfer-learning guide. In Keras 3 fit's explicit
        # training=True overrides it: what keeps batch normalization's statistics while
        # fine-tuning is that its layers are frozen above.
        x = base(x, training=False if self.weights is not None else None)
        x = keras.layers.Dropout(hp.Float("dropout", 0.0, 0.9))(x)
        outputs = keras.layers.Dense(self.num_classes, activation="softmax")(x)
        return keras.Model(inputs, outputs, name="mobilenetv2")
