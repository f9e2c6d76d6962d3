"""Deployment costs: the TFLite file's size and the latency at batch 1, before training."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from autodl import deployment


def _model(units: int, dropout: float = 0.0, activation: str = "relu") -> keras.Model:
    inputs = keras.Input((8, 8, 1))
    hidden = keras.layers.Dropout(dropout)(keras.layers.Flatten()(inputs))
    hidden = keras.layers.Dense(units, activation=activation)(hidden)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(hidden))


def test_size_is_the_exported_files_and_latency_is_timed_by_litert(tmp_path):
    model = _model(16)
    measured = deployment.measure(model)
    deployment.write_tflite(model, tmp_path / "model.tflite")
    assert measured.size_bytes == (tmp_path / "model.tflite").stat().st_size
    assert 0 < measured.latency_ms < 100
    assert measured.runtime.startswith("litert ") and measured.runtime.endswith("1 thread")
    # The file it measured is the model: LiteRT runs it to the Keras model's outputs.
    x = np.random.default_rng(0).uniform(size=(4, 8, 8, 1)).astype("float32")
    run = deployment.litert_runner(tmp_path / "model.tflite")
    np.testing.assert_allclose(run(x), model.predict(x, verbose=0), atol=1e-5)


def test_a_larger_model_is_a_larger_file():
    assert deployment.measure(_model(256)).size_bytes > deployment.measure(_model(8)).size_bytes


def test_without_litert_keras_times_the_model_and_says_so(monkeypatch):
    monkeypatch.setattr(deployment, "has_litert", lambda: False)
    measured = deployment.measure(_model(16))
    assert measured.runtime.startswith("keras ") and "LiteRT not installed" in measured.runtime
    assert measured.latency_ms > 0 and measured.size_bytes > 0


def test_the_median_is_taken_after_warm_up_calls(monkeypatch):
    calls = []
    monkeypatch.setattr(deployment, "TIMED_SECONDS", 0.0)
    deployment.median_milliseconds(lambda: calls.append(1))
    assert len(calls) == deployment.WARM_UP_CALLS + deployment.MIN_TIMED_CALLS


@pytest.mark.parametrize("threads", [1, None])
def test_the_litert_runner_resizes_to_any_batch(tmp_path, threads):
    deployment.write_tflite(_model(4), tmp_path / "m.tflite")
    run = deployment.litert_runner(tmp_path / "m.tflite", threads)
    assert run(np.zeros((1, 8, 8, 1), "float32")).shape == (1, 3)
    assert run(np.zeros((5, 8, 8, 1), "float32")).shape == (5, 3)


def test_one_architecture_has_one_digest_whatever_its_weights_and_dropout():
    digest = deployment.architecture_digest(_model(16))
    assert deployment.architecture_digest(_model(16, dropout=0.4)) == digest
    assert deployment.architecture_digest(_model(32)) != digest
    assert deployment.architecture_digest(_model(16, activation="tanh")) != digest
