"""Arguments shared by the commands that read a bundle and write a table (export, audience)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def add_bundle_and_output(parser: argparse.ArgumentParser) -> None:
    """``--artifacts ROOT`` (a bundle root or one version) and ``--out FILE`` (.csv/.parquet)."""
    parser.add_argument(
        "--artifacts",
        required=True,
        type=Path,
        metavar="ROOT",
        help="bundle root (follows ROOT/current) or one version directory",
    )
    parser.add_argument(
        "--out", required=True, type=Path, metavar="FILE", help="output file, .csv or .parquet"
    )


STORE_HELP = (
    "the online store serving reads (sqlite:///PATH, redis://HOST:PORT/DB, "
    "redis+cluster://SEEDS): its recent events apply the seen rule as online (an item bought "
    "online is not recommended, its buyer is no audience for it) and its profiles/artwork "
    "statistics are used as serving does; 'none' = the bundle's training history only "
    "(default: $RECSVC_FEATURE_STORE, else serve's default {default})"
)


def add_feature_store(parser: argparse.ArgumentParser) -> None:
    """``--feature-store URL|none`` with serve's default, and ``--seen-events``."""
    from feature_store.factory import DEFAULT_STORE_URL

    parser.add_argument(
        "--feature-store",
        metavar="URL",
        default=None,
        help=STORE_HELP.format(default=DEFAULT_STORE_URL),
    )
    parser.add_argument(
        "--seen-events",
        metavar="TYPES",
        default=None,
        help="event types (recent and in training history) that hide their item besides "
        "purchase and rating, as serve's --seen-events (default: $RECSVC_SEEN_EVENTS, else "
        "view,click,add_to_cart)",
    )


def feature_store_url(value: str | None) -> str | None:
    """The store to read: the flag, else ``$RECSVC_FEATURE_STORE``, else serve's default;
    None for ``none``. The default SQLite file, when it does not exist, is no store (nothing
    was served from it; opening it would create an empty one)."""
    from feature_store.factory import DEFAULT_STORE_URL

    url = value if value is not None else os.environ.get("RECSVC_FEATURE_STORE", "")
    explicit = bool(url.strip())
    url = url.strip() or DEFAULT_STORE_URL
    if url.lower() == "none":
        return None
    missing = url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists()
    if missing and not explicit:
        print(
            f"note: feature store {url} (the default) does not exist: the bundle's "
            "history only (--feature-store none says so explicitly)",
            file=sys.stderr,
        )
        return None
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        # absolute, so Spark executors (another working directory) open the same file
        path, sep, query = url.removeprefix("sqlite:///").partition("?")
        url = f"sqlite:///{Path(path).resolve()}{sep}{query}"
    return url


def seen_event_types(value: str | None) -> frozenset[str]:
    """``--seen-events``, else ``$RECSVC_SEEN_EVENTS``, else the default; a bad name is a
    UsageError naming the flag and the known types."""
    from recsvc.errors import UsageError
    from recsvc.events import DEFAULT_SEEN_EVENTS, parse_seen_events

    text = value if value is not None else os.environ.get("RECSVC_SEEN_EVENTS")
    if text is None:
        return DEFAULT_SEEN_EVENTS
    try:
        return parse_seen_events(text)
    except ValueError as exc:
        raise UsageError(f"--seen-events: {exc}") from None
