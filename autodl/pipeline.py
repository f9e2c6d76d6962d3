"""The input pipeline: a study's in-memory splits as ``tf.data``, made once per process.

The arrays become tensors once, when the trial runner starts; each trial then draws
its own shuffled, batched and prefetched batches from them by index, so no trial
converts or copies the data again. Even on a 2-core CPU this trains faster than
``fit`` on NumPy arrays (``benchmarks/overhead.py``); on a GPU the next batches are
ready while the current one trains.
"""

from __future__ import annotations

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

    def train(self, batch_size: int, one_hot: bool = False) -> tf.data.Dataset:
        """The training split, reshuffled every epoch (seeded by TensorFlow's global seed)."""
        return self._batches(*self._train, batch_size, shuffle=True, one_hot=one_hot)

    def validation(self, batch_size: int, one_hot: bool = False) -> tf.data.Dataset:
        """The validation split, in order."""
        return self._batches(*self._val, batch_size, shuffle=False, one_hot=one_hot)

    def _batches(
        self, x: Any, y: Any, batch_size: int, shuffle: bool, one_hot: bool
    ) -> tf.data.Dataset:
        indices = tf.data.Dataset.range(len(y))
        if shuffle:
            # Shuffling indices, not examples: the buffer holds numbers, not images.
            indices = indices.shuffle(len(y), reshuffle_each_iteration=True)

        def gather(batch: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            labels = tf.gather(y, batch)
            return tf.gather(x, batch), tf.one_hot(labels, self.num_classes) if one_hot else labels

        return (indices.batch(batch_size)
                .map(gather, num_parallel_calls=tf.data.AUTOTUNE)
                .prefetch(tf.data.AUTOTUNE))
