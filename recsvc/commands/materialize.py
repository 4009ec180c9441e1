"""``recsvc materialize``: load user profiles and item attributes into a feature store."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from feature_store.factory import DEFAULT_STORE_URL
from recsvc.errors import UsageError

STORE_ENV = "RECSVC_FEATURE_STORE"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Read the contract files in DIR (users, items; interactions are validated too) and "
        "write user profiles (region and every other user column) and item attributes "
        "(regions and every other item column) into the online feature store, in batches. "
        "Re-running overwrites rows in place."
    )
    parser.add_argument(
        "--data", required=True, type=Path, metavar="DIR", help="folder with the contract files"
    )
    parser.add_argument(
        "--feature-store",
        default=os.environ.get(STORE_ENV, DEFAULT_STORE_URL),
        metavar="URL",
        help=f"sqlite:///PATH or redis://HOST:PORT/DB[?prefix=...] "
        f"(default: ${STORE_ENV} or {DEFAULT_STORE_URL})",
    )
    parser.add_argument(
        "--batch-size", type=int, default=5_000, metavar="N", help="rows per write (5000)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def run(args: argparse.Namespace) -> int:
    from training.data import load_dataset
    from training.materialize import materialize, stderr_progress

    if not args.data.is_dir():
        raise UsageError(f"--data {args.data}: no such folder")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size {args.batch_size}: must be >= 1")
    dataset = load_dataset(args.data)
    progress = None if args.quiet else stderr_progress()
    counts = materialize(dataset, args.feature_store, batch_size=args.batch_size, progress=progress)
    print(
        f"materialized {counts['users']} user profiles and {counts['items']} item attributes "
        f"into {args.feature_store}"
    )
    return 0
