"""``recsvc events export``: the feature store's event log (what ``RecordEvents`` accepted)
as contract ``interactions`` for the next training.

``--out DIR`` receives ``interactions.parquet`` (event id, user, item, timestamp in epoch
seconds, event type, and the millisecond timestamp) and ``events.json``; exporting again
into the same folder merges by event id, so repeated or overlapping exports never
duplicate an event. Train on it next to the contract files:
``recsvc train --data FILES_DIR --data DIR ...``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from feature_store.factory import DEFAULT_STORE_URL

STORE_ENV = "RECSVC_FEATURE_STORE"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Online events as training data."
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    export = sub.add_parser(
        "export",
        help="write the online events as contract interactions (Parquet)",
        description="Write the events the servers recorded (RecordEvents) since T as contract "
        "interactions into DIR, merged by event id with an earlier export there.",
    )
    export.add_argument(
        "--feature-store",
        metavar="URL",
        default=os.environ.get(STORE_ENV, DEFAULT_STORE_URL),
        help=f"store the servers record into (default: ${STORE_ENV} or {DEFAULT_STORE_URL})",
    )
    export.add_argument(
        "--since",
        default=None,
        metavar="T",
        help="epoch seconds, ISO-8601 or an age (30m, 24h, 7d); default: an hour before the "
        "newest event already in DIR, or the whole log",
    )
    export.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")


def run(args: argparse.Namespace) -> int:
    from recsvc.commands.retrain import export

    export(args.feature_store, args.out, args.since)
    return 0
