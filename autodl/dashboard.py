"""Serving optuna-dashboard on a study storage, with the stored models as artifacts."""

from __future__ import annotations

import errno
import ipaddress
import socket
from collections.abc import Callable

import optuna_dashboard
from optuna.artifacts import FileSystemArtifactStore

from autodl import storage
from autodl.errors import AutodlError


def is_loopback(host: str) -> bool:
    """Whether ``host`` can only be reached from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name
        return False


def dashboard_url(host: str, port: int) -> str:
    """The address to open in a browser."""
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def _check_address(host: str, port: int) -> None:
    """Bind ``host:port`` as the dashboard's server will, so a failure is one clear line."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does
        try:
            probe.bind((host, port))
        except OSError as error:
            reason = "the port is in use" if error.errno == errno.EADDRINUSE else (
                error.strerror or str(error))
            raise AutodlError(f"cannot serve the dashboard on {host}:{port}: {reason}") from None


def serve(
    url: str,
    host: str,
    port: int,
    on_ready: Callable[[str], None] | None = None,
    artifacts: str | None = None,
) -> None:
    """Run optuna-dashboard on the storage at ``url`` until Ctrl-C.

    The dashboard reads the same artifact store ``autodl tune`` uploads models to, so
    each best-so-far trial shows its model file.

    Args:
        url: The storage URL.
        host: The address to listen on.
        port: The port to listen on.
        on_ready: Called with the dashboard's address once the storage is open, just
            before the server starts.
        artifacts: The model folder, if not the default one for ``url``.

    Raises:
        AutodlError: If the port is out of range, the storage does not exist or cannot be
            opened, or the address cannot be listened on (in use, unknown host).
    """
    if not 1 <= port <= 65535:
        raise AutodlError(f"--port must be between 1 and 65535, got {port}")
    rdb = storage.open_existing_storage(url)
    artifacts = FileSystemArtifactStore(str(storage.artifact_dir(url, artifacts)))
    _check_address(host, port)
    if on_ready is not None:
        on_ready(dashboard_url(host, port))
    # Returns when Ctrl-C stops the server (bottle catches the KeyboardInterrupt). Should
    # another program take the port in the meantime, its OSError keeps its traceback.
    optuna_dashboard.run_server(rdb, host=host, port=port, artifact_store=artifacts)
