"""The process's runtime: TensorFlow's devices and threads, and the libraries' logging.

Every process that trains (the tuning process, each worker) sets itself up here, once,
before its first trial.
"""

from __future__ import annotations

import functools
import gc
import os
import socket
import warnings

from autodl._imports import native_stderr_hidden


def share_machine(workers: int, worker: int, gpus: int) -> None:
    """Give this process, one of ``workers``, its share of the CPU threads or its own GPU.

    Call it before TensorFlow starts.
    """
    if gpus > 1:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(worker % gpus)
    with native_stderr_hidden():
        import tensorflow as tf

        threads = max(1, (os.cpu_count() or 1) // workers)
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


def setup_devices() -> list[str]:
    """Start the TensorFlow runtime; every GPU grows its memory as needed instead of taking all.

    Returns:
        The names of the GPUs found (empty on a CPU-only machine).
    """
    import tensorflow as tf

    # Retracing notices: every trial builds a new model, so retracing is expected.
    tf.get_logger().setLevel("ERROR")
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    return [gpu.name for gpu in gpus]


@functools.cache
def freeze_long_lived_objects() -> None:
    """Exempt what the process holds before its first trial from garbage collection.

    TensorFlow, Keras and the data make millions of objects that live as long as the
    process; every full collection walks them all: about 0.25 s on a 2-core machine, and
    TensorFlow's TFLite converter runs one per export (each deployment measurement).
    Frozen (``gc.freeze``), they are skipped, and a collection takes milliseconds. Once
    per process: what is frozen is never collected.
    """
    gc.collect()
    gc.freeze()


def gpu_count() -> int:
    """How many GPUs TensorFlow sees on this machine."""
    import tensorflow as tf

    return len(tf.config.list_physical_devices("GPU"))


@functools.cache
def training_device() -> str:
    """Where this process trains: ``GPU:0 (NVIDIA H100 80GB HBM3)``, or ``CPU``.

    The GPU's number is the machine's (from ``CUDA_VISIBLE_DEVICES``, which gives each
    worker its own), not the process's, which is always 0.
    """
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "CPU"
    name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return f"GPU:{visible if visible.isdigit() else 0} ({name})"


def quiet_libraries() -> None:
    """Keep Optuna's per-trial logging and warnings out of the progress display."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def _process_stat(pid: int) -> tuple[str, str] | None:
    """A process's state letter and start (clock ticks since boot), Linux; ``None`` if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # The command name, in parentheses, may hold spaces: count from after it.
            fields = stat.read().rsplit(")", 1)[1].split()
        return fields[0], fields[19]
    except (OSError, IndexError):
        return None


def process_identity() -> str:
    """This process, as ``host:pid:start``: a process's identity even once its pid is reused."""
    stat = _process_stat(os.getpid())
    return f"{socket.gethostname()}:{os.getpid()}:{stat[1] if stat else '?'}"


def process_gone(identity: str) -> bool:
    """Whether a process of this host named by :func:`process_identity` has ended.

    ``False`` for a process of another host: its end is for the heartbeat to find.
    """
    host, pid, start = identity.rsplit(":", 2)
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, or a zombie: another user's
        pass
    stat = _process_stat(int(pid))
    if stat is None:  # no /proc: alive is all we know
        return False
    state, started = stat
    # A zombie has ended (its parent, killed too, will never reap it); a pid reused by
    # another process started at another time.
    return state in ("Z", "X") or (start != "?" and started != start)
