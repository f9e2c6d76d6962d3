"""Optional dependencies, imported on first use with an error that says how to install them."""

from __future__ import annotations

import importlib
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
