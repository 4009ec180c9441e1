"""``recsvc query``: ask a running server for one user's recommendations, as a table."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from recsvc.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Ask a running `recsvc serve` for recommendations and print a table."
    a = parser.add_argument
    a("--user", required=True, help="user id (an unknown id gets a cold-start answer)")
    a("--k", type=int, default=10, help="how many items (1..500, default 10)")
    a("--region", default="", help="request context region (e.g. US-9)")
    a("--attribute", action="append", default=[], metavar="KEY=VALUE",
      help="extra context attribute (repeatable)")  # fmt: skip
    a("--exclude", action="append", default=[], metavar="ITEM", help="item id to leave out")
    a("--category", action="append", default=[], help="keep only this category (repeatable)")
    a("--target", default="127.0.0.1:50051", help="server HOST:PORT (default 127.0.0.1:50051)")
    a("--token", default=None, help="bearer token (default: $RECSVC_AUTH_TOKEN)")
    a("--tls-ca", type=Path, default=None, help="CA/cert PEM to trust: use TLS")
    a("--timeout", type=float, default=5.0, help="deadline in seconds (default 5)")
    a("--json", action="store_true", help="print the response as JSON instead of a table")


def _attributes(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--attribute {pair!r}: expected KEY=VALUE")
        out[key] = value
    return out


def format_table(resp: Any) -> str:
    head = (
        f"model {resp.model_version}  request {resp.request_id}"
        + (f"  experiment {resp.experiment}/{resp.variant}" if resp.experiment else "")
        + ("  DEGRADED (feature store unavailable)" if resp.degraded else "")
    )
    rows = [("#", "item_id", "score", "artwork", "reason")]
    for rank, item in enumerate(resp.items, 1):
        rows.append((str(rank), item.item_id, f"{item.score:.4f}",
                     f"{item.artwork_variant_id} (p={item.artwork_propensity:.2f})"
                     if item.artwork_variant_id else "-", item.reason))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [head]
    for r in rows:
        lines.append(
            "  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4]
        )
    if not resp.items:
        lines.append("(no items)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.k <= 500:
        raise UsageError(f"--k: must be in 1..500, got {args.k}")
    if args.timeout <= 0:
        raise UsageError(f"--timeout: must be > 0, got {args.timeout}")
    import grpc
    from google.protobuf.json_format import MessageToDict

    from recsvc.v1 import recommender_pb2 as pb
    from recsvc.v1 import recommender_pb2_grpc as pb_grpc

    token = args.token if args.token is not None else os.environ.get("RECSVC_AUTH_TOKEN", "")
    metadata = [("authorization", f"Bearer {token}")] if token else None
    if args.tls_ca is not None:
        try:
            ca = args.tls_ca.read_bytes()
        except OSError as exc:
            raise UsageError(f"--tls-ca: {exc}") from None
        channel = grpc.secure_channel(args.target, grpc.ssl_channel_credentials(ca))
    else:
        channel = grpc.insecure_channel(args.target)
    request = pb.RecommendRequest(
        user_id=args.user, k=args.k, exclude_item_ids=args.exclude, categories=args.category,
        context=pb.Context(region=args.region, attributes=_attributes(args.attribute)),
    )  # fmt: skip
    with channel:
        try:
            resp = pb_grpc.RecommenderStub(channel).Recommend(
                request, timeout=args.timeout, metadata=metadata
            )
        except grpc.RpcError as exc:
            detail = " ".join(str(exc.details()).split())  # one line, whatever gRPC said
            print(f"recsvc query: error: {exc.code().name}: {detail}", file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps(MessageToDict(resp, preserving_proto_field_name=True), indent=2))
    else:
        print(format_table(resp))
    return 0
