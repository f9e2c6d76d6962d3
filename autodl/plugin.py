"""The plugin contract: what an architecture plugin is, what it receives, what autodl calls.

A plugin is a KerasTuner hypermodel, so one file runs under KerasTuner's tuners and
under autodl unchanged. :class:`HyperModel` states the whole contract. Subclassing it
is optional: any ``keras_tuner.HyperModel`` subclass is a plugin, and so is a plain
``build(hp)`` function, which :class:`BuildFunction` wraps as KerasTuner's
``DefaultHyperModel`` does.

The core asks this module, and nothing else, what a plugin takes and does:
:func:`plugin_arguments`, :func:`make_hypermodel`, :func:`owns_compile` and
:func:`overrides_fit`. It knows nothing of Optuna, storage or files; neither may plugins.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, ClassVar

import keras
import keras_tuner

#: The facts of the task a plugin is made for, under every name a plugin may ask for them.
TASK_FACTS = ("input_shape", "num_classes", "classes")
#: What a ``build`` function may ask for besides ``hp`` (it takes no options).
FUNCTION_FACTS = ("input_shape", "num_classes")


class HyperModel(keras_tuner.HyperModel):
    """An architecture plugin: a KerasTuner hypermodel for one classification task.

    **What it receives.** autodl makes one instance per process, for the task of the
    study's data, passing the keyword arguments its ``__init__`` names among:

    * ``input_shape``: the shape of one example, e.g. ``(28, 28, 1)``;
    * ``num_classes``, or KerasTuner's name ``classes``: how many classes there are;
    * options from the command line, e.g. ``weights`` (``--weights``). An option the
      plugin does not take is an error; one the user did not give is not passed.

    Fixed facts of the task belong in ``__init__``; what is tuned is declared inline in
    ``build`` (as in ``keras_tuner.applications``).

    **What autodl calls, and when.** For each trial, in a fresh Keras session seeded
    for the trial and under the study's dtype policy:

    1. autodl declares its training hyperparameters on ``hp``
       (``autodl.config.TRAINING_SPACE``: optimizer, learning rate and schedule, batch
       size); for a plugin that :attr:`owns_compile`, only ``batch_size``. Never
       ``batch_size`` when the plugin overrides ``fit``: its ``fit`` owns batching.
    2. ``build(hp)``, once. It declares its own hyperparameters with KerasTuner's ``hp``
       API (their values come from the Optuna trial) and returns a ``keras.Model`` with
       a softmax output over the classes, uncompiled unless :attr:`owns_compile`.
    3. Unless :attr:`owns_compile`, autodl compiles the model with the trial's
       optimizer and learning-rate schedule, a sparse categorical crossentropy loss and
       the ``accuracy`` metric.
    4. ``fit(hp, model, x, y, validation_data=(x_val, y_val), epochs=E,
       callbacks=[...], verbose=0)``, only if the class overrides KerasTuner's
       ``HyperModel.fit``, as KerasTuner's tuners call it: NumPy arrays, labels encoded
       as the model's loss expects, and autodl's callbacks (its trial monitor, which
       records every epoch, reports ``val_accuracy`` to Optuna and prunes, early
       stopping, TensorBoard and learning-rate plateaus when asked for). ``fit`` must
       pass ``callbacks`` on to ``model.fit``: the trial's value is the best
       ``val_accuracy`` the monitor saw, whatever ``fit`` returns. Hyperparameters
       ``fit`` declares (``hp.Choice("batch_size", ...)``) are tuned like ``build``'s.
       Without an override autodl calls ``model.fit`` itself with the trial's batch size.

    Outside trials autodl calls ``build(hp)`` with default values, without training,
    to list and check a plugin's hyperparameters (``autodl plugins``, and before a study
    starts): ``build`` should do nothing but make the model.

    Attributes:
        owns_compile: ``True`` when ``build`` compiles the model itself, as KerasTuner's
            own applications do. autodl then keeps its optimizer, loss and metrics
            (which must include ``accuracy``), declares only ``batch_size``, and gives it
            one-hot labels when its loss is a non-sparse categorical crossentropy.
    """

    owns_compile: ClassVar[bool] = False

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        """Build one model for the values in ``hp``.

        Args:
            hp: The hyperparameters: declare each one with ``hp.Int``, ``hp.Float``,
                ``hp.Choice``, ``hp.Boolean`` or ``hp.Fixed``, which return its value.

        Returns:
            A ``keras.Model``: uncompiled, unless :attr:`owns_compile`.
        """
        raise NotImplementedError


class BuildFunction(HyperModel):
    """A plain ``build(hp[, input_shape, num_classes])`` function, as a hypermodel.

    KerasTuner's ``DefaultHyperModel`` wraps a ``build(hp)`` function the same way;
    this one also passes the function the task facts it names.

    Args:
        function: The ``build`` function.
        **facts: The task facts it takes (see :data:`FUNCTION_FACTS`).
    """

    def __init__(self, function: Callable[..., keras.Model], **facts: Any) -> None:
        super().__init__(name=getattr(function, "__name__", "build"))
        self.function = function
        self.facts = facts

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        """Call the function with ``hp`` and the task facts it takes."""
        return self.function(hp, **self.facts)


def _keywords(function: Callable) -> set[str]:
    return {
        name for name, p in inspect.signature(function).parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def _is_hypermodel_class(target: Any) -> bool:
    return inspect.isclass(target) and issubclass(target, keras_tuner.HyperModel)


def plugin_arguments(target: Any) -> set[str]:
    """The keyword arguments a plugin is made with: task facts and options.

    Args:
        target: What the plugin's module offers: a ``keras_tuner.HyperModel`` subclass
            (its ``__init__`` says), or a ``build`` function (which takes task facts
            only, never options).

    Raises:
        TypeError: If ``target`` is neither.
    """
    if _is_hypermodel_class(target):
        return _keywords(target.__init__)
    if callable(target):
        return set(FUNCTION_FACTS) & _keywords(target)
    raise TypeError(f"{target!r} is neither a build function nor a HyperModel subclass")


def make_hypermodel(
    target: Any, input_shape: tuple[int, ...], num_classes: int, **options: Any
) -> keras_tuner.HyperModel:
    """Make a plugin's hypermodel for one task.

    Args:
        target: A ``keras_tuner.HyperModel`` subclass or a ``build`` function.
        input_shape: Shape of one example.
        num_classes: Number of classes.
        **options: Options the plugin takes (the caller checks them against
            :func:`plugin_arguments`, to word its own error).

    Returns:
        The hypermodel: an instance of ``target``, or ``target`` wrapped in
        :class:`BuildFunction`.
    """
    accepted = plugin_arguments(target)
    facts = dict(zip(TASK_FACTS, (input_shape, num_classes, num_classes), strict=True))
    kwargs = {name: value for name, value in facts.items() if name in accepted} | options
    if _is_hypermodel_class(target):
        return target(**kwargs)
    return BuildFunction(target, **kwargs)


def owns_compile(hypermodel: Any) -> bool:
    """Whether a hypermodel compiles its own models (see :attr:`HyperModel.owns_compile`)."""
    return bool(getattr(hypermodel, "owns_compile", False))


def overrides_fit(hypermodel: Any) -> bool:
    """Whether a hypermodel has its own ``fit``, which autodl then trains it with."""
    fit = getattr(type(hypermodel), "fit", keras_tuner.HyperModel.fit)
    return fit is not keras_tuner.HyperModel.fit
