"""``recsvc console``: the operator web console (experiments, models, artwork, live metrics,
insights) over the feature store, the bundle root and the servers' metrics endpoints."""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path

from recsvc.errors import UsageError

ADMIN_ENV = "RECSVC_CONSOLE_TOKEN"
READ_ENV = "RECSVC_CONSOLE_READ_TOKEN"
MIN_TOKEN_CHARS = 16


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--artifacts",
        required=True,
        type=Path,
        metavar="ROOT",
        help="bundle root (the one the servers watch)",
    )
    parser.add_argument(
        "--feature-store",
        required=True,
        metavar="URL",
        help="sqlite:///PATH or redis://HOST:PORT/DB (the servers' store)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="HTTP(S) port (8080)")
    parser.add_argument(
        "--servers",
        default="",
        metavar="HOST:PORT,...",
        help="servers' Prometheus endpoints (recsvc serve --metrics-port)",
    )
    parser.add_argument(
        "--auth-token",
        metavar="T",
        action="append",
        default=[],
        help=f"admin token (repeatable; or ${ADMIN_ENV}); without one a random "
        "token is generated and printed",
    )
    parser.add_argument(
        "--read-token",
        metavar="T",
        action="append",
        default=[],
        help=f"read-only token (repeatable; or ${READ_ENV})",
    )
    parser.add_argument("--tls-cert", type=Path, metavar="FILE", help="PEM certificate (HTTPS)")
    parser.add_argument("--tls-key", type=Path, metavar="FILE", help="PEM private key (HTTPS)")


def parse_servers(text: str) -> tuple[str, ...]:
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        host, sep, port = part.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"--servers {part!r}: expected HOST:PORT")
        out.append(part)
    return tuple(out)


def _tokens(given: list[str], env: str) -> list[str]:
    tokens = list(given) or ([os.environ[env]] if os.environ.get(env) else [])
    for token in tokens:
        if len(token) < MIN_TOKEN_CHARS:
            raise UsageError(f"console tokens need at least {MIN_TOKEN_CHARS} characters")
    return tokens


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from recsvc.console.app import ConsoleConfig, create_app

    if not args.artifacts.is_dir():
        raise UsageError(f"--artifacts {args.artifacts}: not a directory")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    for path in (args.tls_cert, args.tls_key):
        if path is not None and not path.is_file():
            raise UsageError(f"{path}: no such file")
    if not 0 < args.port < 65536:
        raise UsageError(f"--port {args.port}: must be 1..65535")
    admin = _tokens(args.auth_token, ADMIN_ENV)
    if not admin:
        admin = [secrets.token_urlsafe(24)]
        print(f"admin token for this run: {admin[0]}", file=sys.stderr)
    config = ConsoleConfig(
        artifacts=args.artifacts,
        feature_store=args.feature_store,
        admin_tokens=tuple(admin),
        read_tokens=tuple(_tokens(args.read_token, READ_ENV)),
        servers=parse_servers(args.servers),
        secure_cookies=args.tls_cert is not None,
    )
    app = create_app(config)
    scheme = "https" if args.tls_cert else "http"
    print(f"console on {scheme}://{args.host}:{args.port}/", file=sys.stderr)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        ssl_certfile=str(args.tls_cert) if args.tls_cert else None,
        ssl_keyfile=str(args.tls_key) if args.tls_key else None,
    )
    return 0
