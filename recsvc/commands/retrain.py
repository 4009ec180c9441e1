"""``recsvc retrain``: the scheduled loop in one command: export the online events from the
feature store into an events folder, train on the data folders plus that folder, and let
the promotion gate decide whether the new version becomes current.

Exit codes (one per outcome, for cron and Kubernetes CronJobs):

- 0 promoted: ``current`` points at the new version (servers watching the root swap to it)
- 3 refused by the gate: the new version is published but ``current`` is unchanged
- 2 bad input or usage (one line naming what is wrong); nothing published
- 4 the feature store could not be read; nothing trained
- 1 unexpected failure (traceback on stderr); ``current`` unchanged
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from recsvc.commands import train as train_command
from recsvc.errors import UsageError

PROMOTED, FAILED, BAD_INPUT, REFUSED, STORE_DOWN = 0, 1, 2, 3, 4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    train_command.add_arguments(parser)
    parser.description = (
        "Export the online events of --feature-store into --events DIR (merged by event id), "
        "train on every --data folder plus DIR, and promote the new version only if it is "
        "not worse than current on the newest interactions (--promote if-better, the "
        "default here). Exit 0 promoted, 3 refused by the gate, 2 bad input, 4 feature "
        "store unreadable, 1 unexpected failure."
    )
    parser.set_defaults(promote="if-better")
    parser.add_argument(
        "--events",
        required=True,
        type=Path,
        metavar="DIR",
        help="folder the events are exported into (kept between runs; created if missing)",
    )
    parser.add_argument(
        "--since",
        default=None,
        metavar="T",
        help="export events from T (epoch seconds, ISO-8601 or an age: 24h, 7d); default: "
        "an hour before the newest event already in DIR, or the whole log",
    )


def run(args: argparse.Namespace) -> int:
    from feature_store.errors import FeatureStoreUnavailable

    if args.feature_store is None:
        raise UsageError("--feature-store URL is required (the store the servers record into)")
    if args.engine != "local":
        raise UsageError("retrain runs with --engine local")
    url = train_command.store_url(args.feature_store, args.out)
    assert url is not None
    try:
        exported = export(url, args.events, args.since, quiet=args.quiet)
    except FeatureStoreUnavailable as exc:
        print(f"recsvc retrain: {exc}", file=sys.stderr)
        return STORE_DOWN
    if exported.total == 0:
        print(f"no events in {args.events} yet: training on the data folders only")
    else:
        args.data = [*args.data, str(args.events)]
    return train_command.run(args)


def export(url: str, folder: Path, since: str | None, *, quiet: bool = False) -> Any:
    """``recsvc events export``'s work: the store's event log since ``since`` into
    ``folder``; returns the ``training.events.ExportResult``."""
    from feature_store.factory import open_store
    from training.events import EVENTS_MANIFEST, export_events, parse_since

    since_ms = parse_since(since) if since is not None else _resume_point(folder / EVENTS_MANIFEST)
    store = open_store(url)
    try:
        result = export_events(store.read_log("event", since_ms=since_ms), folder, url, since_ms)
    finally:
        store.close()
    if not quiet:
        print(
            f"exported {result.read} events since {since_ms} ms ({result.new} new) into "
            f"{result.path}: {result.total} in all "
            + ", ".join(f"{k} {v}" for k, v in result.counts.items())
        )
    return result


# Late events (a replica's buffered batch, a client retry) can land in the log with an
# older timestamp than events already exported; re-reading an hour back catches them and
# the merge by event id drops the repeats.
RESUME_OVERLAP_MS = 3_600_000


def _resume_point(manifest: Path) -> int:
    import json

    try:
        info = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0
    last = info.get("last_timestamp_ms")
    return max(0, int(last) - RESUME_OVERLAP_MS) if isinstance(last, int) else 0
