"""The one exception type for mistakes a user can make, and the lookup of named choices."""

from collections.abc import Mapping
from typing import TypeVar

T = TypeVar("T")


class AutodlError(Exception):
    """A problem with the user's input: the CLI prints its message on one line and exits 2.

    Raise it for anything the user can fix (a bad option, a missing file, a conflicting
    study); never for bugs, which should keep their traceback.
    """


def choose(table: Mapping[str, T], name: str, what: str) -> T:
    """The entry of a name-to-factory table that a user named.

    Args:
        table: The choices, e.g. :data:`autodl.samplers.SAMPLERS`.
        name: What the user asked for.
        what: What is chosen, for the message, e.g. ``"sampler"``.

    Raises:
        AutodlError: If ``name`` is not one of the table's names; the message lists them.
    """
    if name not in table:
        raise AutodlError(f"unknown {what} {name!r}; choose from {', '.join(table)}")
    return table[name]
