"""The input pipeline: a study's in-memory splits as ``tf.data``, made once per process.

The arrays become tensors once, when the trial runner starts; each trial then draws
its own shuffled, batched and prefetched batches from them by index, so no trial
converts or copies the data again. Even on a 2-core CPU this trains faster than
``fit`` on NumPy arrays (``benchmarks/overhead.py``); on a GPU the next batches are
ready while the current one trains.
"""

from __future__ import annotations

import math
from typing import Any

import tensorflow as tf

from autodl.datasets import Splits


class InputPipeline:
    """The training and validation splits as ``tf.data`` datasets, for any batch size.

    Args:
        splits: The study's data.
    """

    def __init__(self, splits: Splits) -> None:
        # tf.data runs on the CPU: tensors it captures must live there.
        with tf.device("/CPU:0"):
            self._train = tf.constant(splits.x_train), tf.constant(splits.y_train)
            self._val = tf.constant(splits.x_val), tf.constant(splits.y_val)
        self.num_classes = splits.num_classes

    def steps_per_epoch(self, batch_size: int) -> int:
        """Training batches per epoch."""
        return math.ceil(len(self._train[1]) / batch_size)

    def train(self, batch_size: int, seed: int, epochs: int, first_epoch: int = 0,
              one_hot: bool = False) -> tf.data.Dataset:
        """Epochs ``first_epoch`` to ``epochs - 1`` of the training split, one after another.

        Each epoch's order is a function of ``seed`` and the epoch alone, so a trial
        resumed at epoch k sees the batches it would have seen. The epochs follow each
        other in one dataset: train it with ``steps_per_epoch``
        (:meth:`steps_per_epoch`), and Keras draws each epoch from where the last ended.
        """
        count = len(self._train[1])

        def epoch_order(epoch: tf.Tensor) -> tf.data.Dataset:
            # Shuffling indices, not examples: no buffer of images.
            order = tf.random.experimental.stateless_shuffle(
                tf.range(count, dtype=tf.int64),
                seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
            return tf.data.Dataset.from_tensor_slices(order).batch(batch_size)

        batches = tf.data.Dataset.range(first_epoch, epochs).flat_map(epoch_order)
        return self._gathered(*self._train, batches, one_hot)

    def validation(self, batch_size: int, one_hot: bool = False) -> tf.data.Dataset:
        """The validation split, in order."""
        batches = tf.data.Dataset.range(len(self._val[1])).batch(batch_size)
        return self._gathered(*self._val, batches, one_hot)

    def _gathered(self, x: Any, y: Any, batches: tf.data.Dataset,
                  one_hot: bool) -> tf.data.Dataset:
        """The examples and labels of batches of indices."""

        def gather(batch: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            labels = tf.gather(y, batch)
            return tf.gather(x, batch), tf.one_hot(labels, self.num_classes) if one_hot else labels

        # A gather is cheap: one map call keeps up, and prefetch keeps a batch ready.
        # Without tf.data's autotuning: its model thread notices a cancel only after its
        # current wait, which grows as an iterator ages, and the iterator's destructor
        # waits for it. On TensorFlow 2.21 a 10-epoch trial's ``fit`` returned 28-34 s
        # after its last epoch ended; without it, at once, and the epochs took as long
        # within the machine's noise (benchmarks/RESULTS.md).
        options = tf.data.Options()
        options.autotune.enabled = False
        return batches.map(gather).prefetch(tf.data.AUTOTUNE).with_options(options)
