"""Image augmentation as searchable Keras preprocessing layers, for every image architecture.

:func:`augment` is the one place the augmentation hyperparameters are declared, so the
built-in ``cnn`` and ``mobilenetv2`` and KerasTuner's applications (through
:class:`AugmentedApplication`) search the same names and ranges. ``augment`` switches it
on; the factors are declared under it (``hp.conditional_scope``), so they are searched
only while it is on. The layers are Keras's random preprocessing layers, in a
``keras.Sequential`` named ``augmentation`` right after the input, as in the Keras guides:
they transform images only in training (``fit``, or ``model(x, training=True)``);
``predict``, ``evaluate``, ``model(x)`` and exported models pass images through unchanged.

It follows ``keras_tuner.applications.HyperImageAugment`` but does not reuse it: that has
no zoom, flip or on/off switch, and its default mode (RandAugment) is a custom KerasTuner
layer, so a saved model would need KerasTuner to load.
"""

from __future__ import annotations

import keras
import keras_tuner

#: ``flip`` values: ``RandomFlip`` modes, or none. Flipping changes what a digit means,
#: so the shared default (``autodl.config.SHARED_DEFAULTS``) fixes it at "none".
FLIPS = ("none", "horizontal", "vertical", "horizontal_and_vertical")


def augment(hp: keras_tuner.HyperParameters, images: keras.KerasTensor) -> keras.KerasTensor:
    """Declare the augmentation hyperparameters and, when on, augment ``images``.

    Factors are fractions, as the Keras layers take them: ``rotation`` of a full turn,
    ``zoom`` and ``translation`` of the image's height and width, ``contrast`` of the
    contrast itself. A factor of 0 leaves its layer out.

    Args:
        hp: The hyperparameters.
        images: The model's image input, pixels in [0, 1].

    Returns:
        The augmented images, or ``images`` itself when augmentation is off.
    """
    on = hp.Boolean("augment")
    # Declared whether on or off, so KerasTuner sees the whole space; inactive ones are None.
    with hp.conditional_scope("augment", [True]):
        flip = hp.Choice("flip", list(FLIPS))
        rotation = hp.Float("rotation", 0.0, 0.1, default=0.05)
        zoom = hp.Float("zoom", 0.0, 0.2, default=0.1)
        translation = hp.Float("translation", 0.0, 0.2, default=0.1)
        contrast = hp.Float("contrast", 0.0, 0.3, default=0.1)
    if not on:
        return images
    layers = []
    if flip != "none":
        layers.append(keras.layers.RandomFlip(flip))
    if rotation:
        layers.append(keras.layers.RandomRotation(rotation))
    if zoom:
        layers.append(keras.layers.RandomZoom(zoom))
    if translation:
        layers.append(keras.layers.RandomTranslation(translation, translation))
    if contrast:
        # Keras clips to 0..255 by default; autodl's pixels are in [0, 1].
        layers.append(keras.layers.RandomContrast(contrast, value_range=(0.0, 1.0)))
    if not layers:
        return images
    # Keras 3's random layers augment when a model is called without `training`, as its
    # SavedModel and ONNX exporters call it. Recorded here, training=False makes that call
    # inference; fit's explicit training=True still overrides it.
    return keras.Sequential(layers, name="augmentation")(images, training=False)


class AugmentedApplication(keras_tuner.HyperModel):
    """One of KerasTuner's applications (``HyperResNet``, ...) built on augmented images.

    Only ``HyperEfficientNet`` takes an ``augmentation_model``; every application takes
    an ``input_tensor``, so each build lends it the augmented input as that. The
    application's own compilation is dropped: autodl compiles KerasTuner's models.

    Args:
        application: The application, made with ``input_shape``.
    """

    def __init__(self, application: keras_tuner.HyperModel) -> None:
        super().__init__(name=application.name)
        self.application = application

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        """Build the uncompiled model for the values in ``hp`` (autodl compiles it)."""
        inputs = keras.Input(self.application.input_shape)
        self.application.input_tensor = augment(hp, inputs)
        try:
            model = self.application.build(hp)
        finally:
            self.application.input_tensor = None  # the next build makes its own input
        # Built from input_tensor, its model takes a list of one tensor, which exported
        # signatures would ask for too; the same layers, taking the tensor itself.
        return keras.Model(inputs, model.output, name=model.name)
