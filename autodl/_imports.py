"""Optional dependencies, imported on first use with an error that says how to install them."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Iterator
from types import ModuleType

from autodl.errors import AutodlError


def try_import(module: str, extra: str, purpose: str) -> ModuleType:
    """Import an optional module, or fail with the pip command that provides it.

    Args:
        module: The module to import, e.g. ``"torch"``.
        extra: The autodl extra that installs it, e.g. ``"gp"``.
        purpose: What needs it, for the message, e.g. ``"the gp sampler"``.

    Returns:
        The imported module.

    Raises:
        AutodlError: If the module is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise AutodlError(
            f"{purpose} needs the '{module}' package: pip install 'autodl[{extra}]'"
        ) from None


@contextlib.contextmanager
def native_stderr_hidden(hidden: bool = True) -> Iterator[None]:
    """Hide TensorFlow's C++ start-up lines (oneDNN, CUDA probing): they bypass logging."""
    if not hidden:
        yield
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
