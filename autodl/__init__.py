"""autodl: tune Keras models with Optuna, using KerasTuner-style architecture plugins.

Importing this package is cheap: TensorFlow, Keras and Optuna load only when a
command needs them.
"""

__version__ = "0.1.0"
