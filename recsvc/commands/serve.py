"""``recsvc serve``: the gRPC server (contract: proto/recsvc/v1/recommender.proto)."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from feature_store.factory import DEFAULT_STORE_URL
from recsvc.errors import UsageError
from recsvc.settings import ServingSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Serve recommendations over gRPC (recsvc.v1.Recommender, health, reflection). "
        "Every flag can also come from RECSVC_<FLAG> in the environment."
    )
    a = parser.add_argument
    a("--artifacts", type=Path, help="bundle root (ROOT/current is served and watched)")
    a("--port", type=int, help="gRPC port (default 50051; 0 picks a free one)")
    a("--host", help="listen address (default [::])")
    a("--feature-store", help=f"sqlite:///PATH, redis://HOST:PORT/DB, redis+cluster://"
      f"HOST:PORT[,HOST:PORT...] or 'none' (default {DEFAULT_STORE_URL})")  # fmt: skip
    a("--workers", type=int, help="processes sharing the port via SO_REUSEPORT (default 1)")
    a("--metrics-port", type=int, help="Prometheus /metrics port (worker i uses PORT+i)")
    a("--tls-cert", type=Path, help="PEM certificate chain; enables TLS with --tls-key")
    a("--tls-key", type=Path, help="PEM private key")
    a("--auth-token", help="require 'authorization: Bearer TOKEN' (prefer RECSVC_AUTH_TOKEN)")
    a("--bandit-policy", help="artwork policy: auto, lints, ts, ts-item or default (default "
      "'auto': the contextual bandit lints when the bundle has artwork; 'default' = always "
      "the first variant, no learning)")  # fmt: skip
    a("--bandit-params", type=_json_object, metavar="JSON",
      help='per-policy parameters as JSON, e.g. \'{"ts": {"refresh_ms": 0}}\'')  # fmt: skip
    a("--watch-interval", dest="watch_interval_s", type=float,
      help="seconds between checks of ROOT/current (default 1)")  # fmt: skip
    a("--grace", dest="grace_s", type=float, help="drain time on SIGTERM (default 10 s)")
    a("--no-experiments", dest="experiments", action="store_const", const=False,
      help="ignore running experiments")  # fmt: skip
    a("--log-level", help="DEBUG, INFO, WARNING, ERROR (default INFO)")
    a("--metrics-host", help="Prometheus bind address (default 127.0.0.1 when --host is "
      "127.0.0.1, else 0.0.0.0)")  # fmt: skip
    a("--seen-events", metavar="TYPES",
      help="event types that hide their item from a user's list (recent events and training "
      "history) besides purchase and rating (always): comma list of view, click, "
      "add_to_cart, or 'none' (default: all three). Experiments may override it per "
      "variant (overrides.seen_events)")  # fmt: skip


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def settings_from_args(args: argparse.Namespace) -> ServingSettings:
    names = set(ServingSettings.model_fields)
    given: dict[str, Any] = {k: v for k, v in vars(args).items() if k in names and v is not None}
    try:
        return ServingSettings(**given)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err.get("loc", ())) or "settings"
        flag = "--" + field.replace("_", "-") if field in names else field
        raise UsageError(f"{flag}: {err.get('msg', 'invalid')}") from None


def policy_parameters(name: str) -> list[str]:
    """The parameters ``--bandit-params`` may give the policy ``name`` (keyword arguments
    of its class; lints also takes its feature-map settings)."""
    import inspect

    if name in ("ts", "ts-item"):
        from recsvc.bandit.thompson import ThompsonPolicy

        init: Any = ThompsonPolicy.__init__
        extra: tuple[str, ...] = ()
    elif name == "lints":
        from recsvc.bandit import linear

        init, extra = linear.LinearThompsonPolicy.__init__, linear._FEATURE_PARAMS
    else:
        return []
    kw = inspect.Parameter.KEYWORD_ONLY
    return sorted([p.name for p in inspect.signature(init).parameters.values() if p.kind == kw]
                  + list(extra))  # fmt: skip


def check_bandit_params(params: dict[str, dict[str, Any]]) -> None:
    """Refuse an unknown policy or parameter name at start, naming the known ones (a
    typo would otherwise surface as a TypeError from deep inside the policy)."""
    from recsvc.bandit.registry import policy_names

    for name, values in params.items():
        if name not in policy_names():
            raise UsageError(
                f"--bandit-params: unknown policy {name!r}; known: {', '.join(policy_names())}"
            )
        if name == "auto":
            raise UsageError(
                "--bandit-params: give parameters under the policy 'auto' stands for "
                "('lints' with artwork), not under 'auto'"
            )
        if not isinstance(values, dict):
            raise UsageError(f"--bandit-params: {name!r} must map to a JSON object")
        known = policy_parameters(name)
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise UsageError(
                f"--bandit-params: {name!r} has no parameter {unknown[0]!r}; known: "
                + (", ".join(known) or "none")
            )


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    check_bandit_params(settings.bandit_params)
    if not settings.artifacts.exists():
        raise UsageError(f"--artifacts: {settings.artifacts} does not exist")
    from recsvc.serving.logs import configure_logging

    configure_logging(settings.log_level)
    if settings.workers > 1:
        from recsvc.serving.preflight import check_port_free, check_tls_pair
        from recsvc.serving.workers import run_workers

        if settings.tls_cert is not None and settings.tls_key is not None:
            check_tls_pair(settings.tls_cert, settings.tls_key)
        check_port_free(settings.host, settings.port)

        return run_workers(settings)
    from recsvc.serving.server import serve

    asyncio.run(serve(settings))
    return 0
