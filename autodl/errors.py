"""The one exception type for mistakes a user can make."""


class AutodlError(Exception):
    """A problem with the user's input: the CLI prints its message on one line and exits 2.

    Raise it for anything the user can fix (a bad option, a missing file, a conflicting
    study); never for bugs, which should keep their traceback.
    """
