"""The training recipe: learning-rate schedules, ReduceLROnPlateau, TensorBoard callbacks."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from autodl.config import LR_SCHEDULES
from autodl.recipe import EarlyStopping, learning_rate, plateau_callbacks

RATE = 0.1


def rates_at(training: dict, steps: list[int], steps_per_epoch: int = 10, epochs: int = 4):
    schedule = learning_rate({"learning_rate": RATE, **training}, steps_per_epoch, epochs)
    return [float(keras.ops.convert_to_numpy(schedule(step))) for step in steps]


def test_constant_is_the_learning_rate_itself():
    assert learning_rate({"learning_rate": RATE, "lr_schedule": "constant"}, 10, 4) == RATE
    assert learning_rate({"learning_rate": RATE}, 10, 4) == RATE  # self-compilers' default


def test_exponential_multiplies_by_the_decay_rate_every_epoch():
    rates = rates_at({"lr_schedule": "exponential", "lr_decay_rate": 0.5}, [0, 5, 10, 20])
    assert rates == pytest.approx([RATE, RATE * 0.5**0.5, RATE * 0.5, RATE * 0.25])


def test_step_divides_by_ten_at_half_and_three_quarters_of_the_steps():
    # 4 epochs of 10 steps: drops after step 20 and after step 30
    rates = rates_at({"lr_schedule": "step"}, [0, 20, 21, 30, 31, 39])
    assert rates == pytest.approx([RATE, RATE, RATE / 10, RATE / 10, RATE / 100, RATE / 100])


def test_cosine_decays_to_zero_over_all_steps():
    rates = rates_at({"lr_schedule": "cosine", "lr_warmup_fraction": 0.0}, [0, 20, 40, 50])
    assert rates == pytest.approx([RATE, RATE / 2, 0.0, 0.0], abs=1e-7)


def test_cosine_warms_up_linearly_then_decays_over_the_rest():
    # 100 steps: 10 of warm-up from 0, then a cosine over the other 90
    steps = [0, 5, 10, 55, 100]
    rates = rates_at({"lr_schedule": "cosine", "lr_warmup_fraction": 0.1}, steps, 10, 10)
    assert rates == pytest.approx([0.0, RATE / 2, RATE, RATE / 2, 0.0], abs=1e-7)


def test_cyclic_restarts_at_the_learning_rate_every_cycle():
    # 40 steps in 4 cycles of 10
    rates = rates_at({"lr_schedule": "cyclic", "lr_cycles": 4}, [0, 5, 10, 15, 30, 35])
    assert rates == pytest.approx([RATE, RATE / 2, RATE, RATE / 2, RATE, RATE / 2])


def test_every_schedule_autodl_offers_is_built_and_an_unknown_one_refused():
    own = {"lr_decay_rate": 0.9, "lr_warmup_fraction": 0.1, "lr_cycles": 2}
    built = {name: learning_rate({"learning_rate": RATE, "lr_schedule": name, **own}, 10, 4)
             for name in LR_SCHEDULES}
    assert len({type(schedule) for schedule in built.values()}) == len(LR_SCHEDULES)
    with pytest.raises(ValueError, match="unknown lr_schedule 'linear'"):
        learning_rate({"learning_rate": RATE, "lr_schedule": "linear"}, 10, 4)


def test_plateau_callback_only_when_chosen_with_its_factor_and_patience():
    assert plateau_callbacks({"lr_schedule": "constant", "lr_plateau": False}) == []
    assert plateau_callbacks({"lr_schedule": "cosine"}) == []
    (callback,) = plateau_callbacks(
        {"lr_plateau": True, "lr_plateau_factor": 0.5, "lr_plateau_patience": 3}
    )
    assert isinstance(callback, keras.callbacks.ReduceLROnPlateau)
    assert (callback.monitor, callback.factor, callback.patience) == ("val_loss", 0.5, 3)


def run_epochs(stopper, model, scripted):
    """Feed ``stopper`` epochs of (val_accuracy, val_loss); epoch i's weights are all i."""
    stopper.set_model(model)
    model.stop_training = False
    stopper.on_train_begin()
    for epoch, (accuracy, loss) in enumerate(scripted):
        model.set_weights([np.full_like(w, epoch) for w in model.get_weights()])
        stopper.on_epoch_end(epoch, {"val_accuracy": accuracy, "val_loss": loss})
        if model.stop_training:
            break
    stopper.on_train_end()
    return epoch


def test_early_stopping_keeps_the_tied_epoch_of_lowest_loss_without_training_longer():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    # Tied at 0.75 in epochs 1, 3 and 4; epoch 3 has the lowest loss. Patience counts
    # from epoch 1, the first at 0.75: the ties do not extend training.
    scripted = [(0.5, 0.9), (0.75, 0.8), (0.6, 0.7), (0.75, 0.5), (0.75, 0.6), (0.9, 0.1)]
    ours = EarlyStopping("val_accuracy", patience=3)
    assert run_epochs(ours, model, scripted) == 4
    assert (ours.best, ours.best_epoch, ours.best_loss) == (0.75, 3, 0.5)
    assert all((w == 3).all() for w in model.get_weights())
    # Keras's own keeps the first of the tied epochs.
    theirs = keras.callbacks.EarlyStopping("val_accuracy", mode="max", patience=3,
                                           restore_best_weights=True)
    assert run_epochs(theirs, model, scripted) == 4
    assert theirs.best_epoch == 1 and all((w == 1).all() for w in model.get_weights())
    # A higher value is kept whatever its loss.
    assert run_epochs(ours, model, [(0.5, 0.1), (0.6, 2.0), (0.6, 3.0)]) == 2
    assert (ours.best_epoch, ours.best_loss) == (1, 2.0)
