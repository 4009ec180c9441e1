"""Checks a server start makes before anything is loaded or forked, so a bad port or TLS
pair is one clear line instead of gRPC's "Failed to bind to address" (no gRPC import here:
``--workers`` runs these in the parent before forking)."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

from recsvc.errors import UsageError


def check_tls_pair(cert: Path, key: Path) -> None:
    """Refuse a certificate/key pair gRPC could not use, naming why: gRPC itself only says
    "Failed to bind to address" (a key of another certificate, a file that is not PEM)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc):
            raise UsageError(
                f"--tls-key: {key} is not the private key of --tls-cert {cert}"
            ) from None
        raise UsageError(
            f"--tls-cert/--tls-key: {cert} and {key} are not a PEM certificate chain and "
            f"its unencrypted private key ({exc.reason or exc})"
        ) from None


def check_port_free(host: str, port: int) -> None:
    """Refuse a port another process listens on, in one line (gRPC would log a C-level
    error and raise "Failed to bind"). Port 0 (any free port) always passes."""
    if port == 0:
        return
    name = host.strip("[]") or None
    try:
        infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError(f"--host: cannot resolve {host!r}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        # As gRPC binds: SO_REUSEADDR, so a port in TIME_WAIT after a restart is usable.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise UsageError(
                f"--port: cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from None
