"""What a model costs where it is deployed: its TFLite file's size and its latency.

Both depend on the architecture, not on the weights, so they are measured on the built
model before it trains, once per architecture in a study (:func:`architecture_digest`).
The model is exported as ``autodl export --format tflite`` writes it (Keras's
``model.export(format="litert")``, float32); its latency is the median of timed calls
at batch 1, after a warm-up, by the LiteRT interpreter on one thread, the runtime a
phone runs. Without LiteRT installed (``pip install 'autodl[tflite]'``) the Keras model
itself is timed, and the record says so.
"""

from __future__ import annotations

import hashlib
import importlib.util
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from autodl._imports import native_stderr_hidden

if TYPE_CHECKING:
    import keras

#: Untimed calls first: the first calls allocate and warm caches.
WARM_UP_CALLS = 10
#: Timed calls: at least this many, and more for fast models, up to ``TIMED_SECONDS``.
MIN_TIMED_CALLS = 30
MAX_TIMED_CALLS = 1000
TIMED_SECONDS = 0.1
#: Interpreter threads: one, so that latencies compare on a busy machine.
THREADS = 1


def write_tflite(model: keras.Model, path: Path) -> None:
    """Write ``model`` as a float32 TFLite file (Keras's LiteRT export)."""
    model.export(path, format="litert", verbose=False)


def litert_runner(path: Path, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """A function that runs the TFLite file at ``path`` on a batch, with LiteRT."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    source = interpreter.get_input_details()[0]["index"]
    target = interpreter.get_output_details()[0]["index"]

    def run(x: np.ndarray) -> np.ndarray:
        if tuple(interpreter.get_input_details()[0]["shape"]) != x.shape:
            interpreter.resize_tensor_input(source, x.shape)
            interpreter.allocate_tensors()
        interpreter.set_tensor(source, np.ascontiguousarray(x, dtype="float32"))
        interpreter.invoke()
        return interpreter.get_tensor(target).copy()

    return run


def has_litert() -> bool:
    """Whether the LiteRT interpreter is installed (the ``tflite`` extra)."""
    return importlib.util.find_spec("ai_edge_litert") is not None


def median_milliseconds(call: Callable[[], object]) -> float:
    """The median time of ``call`` in milliseconds, after :data:`WARM_UP_CALLS` untimed."""
    for _ in range(WARM_UP_CALLS):
        call()
    times: list[float] = []
    end = time.perf_counter() + TIMED_SECONDS
    while len(times) < MIN_TIMED_CALLS or (time.perf_counter() < end
                                           and len(times) < MAX_TIMED_CALLS):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


@dataclass(frozen=True)
class Deployment:
    """A model's deployment costs.

    Attributes:
        size_bytes: The TFLite file's size.
        latency_ms: Milliseconds per example at batch 1.
        runtime: What ran the timed calls, e.g. ``litert 2.3.0, 1 thread``.
    """

    size_bytes: int
    latency_ms: float
    runtime: str


def architecture_digest(model: keras.Model) -> str:
    """A digest that models of the same architecture share, whatever their weights.

    It covers each layer in order: its class, activation, output shape and the shapes
    of its weights. What it leaves out changes only training (dropout rates,
    regularizers, initializers), not what a deployed model computes, so models with
    one digest have one size and latency: measured again, they differ only by the
    timer's noise. On real MNIST that noise was up to 18% between trials of one
    architecture, enough to put a worse copy on the Pareto front as "faster".
    """
    import keras

    layers = []
    for layer in model.layers:
        output = getattr(layer, "output", None)  # a subclassed model's layers have none
        layers.append((
            type(layer).__name__,
            getattr(getattr(layer, "activation", None), "__name__", None),
            keras.tree.map_structure(lambda tensor: tuple(tensor.shape), output),
            [tuple(weight.shape) for weight in layer.weights],
        ))
    return hashlib.sha256(repr(layers).encode()).hexdigest()[:16]


def _version(module: str) -> str:
    return str(getattr(importlib.import_module(module), "__version__", "?"))


def measure(model: keras.Model) -> Deployment:
    """Export ``model`` as TFLite in a temporary folder, and time it at batch 1."""
    import keras

    example = np.zeros((1, *model.inputs[0].shape[1:]), dtype="float32")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.tflite"
        with native_stderr_hidden():  # the converter's C++ logging
            write_tflite(model, path)
        size = path.stat().st_size
        if has_litert():
            with native_stderr_hidden():  # LiteRT's notice of its CPU delegate
                run = litert_runner(path, THREADS)
            latency = median_milliseconds(lambda: run(example))
            return Deployment(size, latency,
                              f"litert {_version('ai_edge_litert')}, {THREADS} thread")
    tensor = keras.ops.convert_to_tensor(example)
    latency = median_milliseconds(lambda: keras.ops.convert_to_numpy(model(tensor)))
    return Deployment(size, latency, f"keras {keras.__version__} (LiteRT not installed)")
