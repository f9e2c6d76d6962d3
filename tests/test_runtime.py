"""The process runtime: the device a trial records."""

from __future__ import annotations

from autodl.runtime import training_device


def test_training_device_names_the_machines_gpu(monkeypatch):
    import tensorflow as tf

    assert training_device() in ("CPU", training_device.__wrapped__())
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind: ["gpu"])
    monkeypatch.setattr(tf.config.experimental, "get_device_details",
                        lambda gpu: {"device_name": "NVIDIA H100 80GB HBM3"})
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert training_device.__wrapped__() == "GPU:3 (NVIDIA H100 80GB HBM3)"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert training_device.__wrapped__() == "GPU:0 (NVIDIA H100 80GB HBM3)"


def test_long_lived_objects_are_frozen_once_per_process(monkeypatch):
    import gc

    from autodl import runtime

    calls = []
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))
    runtime.freeze_long_lived_objects.cache_clear()
    runtime.freeze_long_lived_objects()
    runtime.freeze_long_lived_objects()
    assert calls == ["freeze"]
