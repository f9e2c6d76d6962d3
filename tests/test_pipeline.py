"""The tf.data input pipeline shared by a process's trials."""

from __future__ import annotations

import numpy as np
from conftest import make_images

from autodl.datasets import Dataset, make_splits
from autodl.pipeline import InputPipeline


def epoch(dataset) -> tuple[np.ndarray, np.ndarray, list[int]]:
    batches = [(x.numpy(), y.numpy()) for x, y in dataset]
    return (np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches]),
            [len(y) for _, y in batches])


def test_training_batches_hold_every_example_once_per_epoch_reshuffled():
    splits = make_splits(Dataset("tiny", *make_images(90), ["0", "1", "2"]), seed=0)
    pipeline = InputPipeline(splits)
    n = len(splits.y_train)
    steps = pipeline.steps_per_epoch(10)
    x, y, sizes = epoch(pipeline.train(batch_size=10, seed=3, epochs=2))
    assert n % 10 and steps == n // 10 + 1
    assert sizes == ([10] * (n // 10) + [n % 10]) * 2  # two epochs, one after the other
    x1, x2 = x[:n], x[n:]
    flat = splits.x_train.reshape(n, -1)
    order = [int(np.flatnonzero((flat == row).all(axis=1))[0]) for row in x1.reshape(n, -1)]
    assert sorted(order) == list(range(n))  # every example once, with its own label
    np.testing.assert_array_equal(y[:n], splits.y_train[order])
    assert order != list(range(n)) and not np.array_equal(x1, x2)

    x, y, _ = epoch(pipeline.validation(batch_size=16))
    np.testing.assert_array_equal(x, splits.x_val)  # in order, every epoch the same
    np.testing.assert_array_equal(y, splits.y_val)


def test_an_epochs_order_depends_on_the_seed_and_the_epoch_alone():
    splits = make_splits(Dataset("tiny", *make_images(90), ["0", "1", "2"]), seed=0)
    pipeline = InputPipeline(splits)
    n = len(splits.y_train)
    whole, _, _ = epoch(pipeline.train(batch_size=8, seed=5, epochs=4))
    resumed, _, _ = epoch(pipeline.train(batch_size=8, seed=5, epochs=4, first_epoch=2))
    np.testing.assert_array_equal(resumed, whole[2 * n:])  # as if it had never stopped
    other, _, _ = epoch(pipeline.train(batch_size=8, seed=6, epochs=4))
    assert not np.array_equal(other, whole)


def test_one_hot_labels_for_models_whose_loss_wants_them():
    splits = make_splits(Dataset("tiny", *make_images(90), ["0", "1", "2"]), seed=0)
    _, y, _ = epoch(InputPipeline(splits).validation(batch_size=8, one_hot=True))
    np.testing.assert_array_equal(y, np.eye(3)[splits.y_val])


def test_no_dataset_autotunes_so_an_iterator_is_freed_at_once():
    # tf.data's autotuning thread held a trial's finished iterator for half a minute.
    pipeline = InputPipeline(make_splits(Dataset("tiny", *make_images(90), ["0", "1", "2"]),
                                         seed=0))
    for dataset in (pipeline.train(batch_size=8, seed=0, epochs=2),
                    pipeline.validation(batch_size=8)):
        assert dataset.options().autotune.enabled is False
