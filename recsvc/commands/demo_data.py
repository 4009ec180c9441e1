"""``recsvc demo-data``: write a synthetic storefront in the input data contract."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recsvc.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Write interactions, users, items and artwork files for a synthetic storefront: "
        "regions with their own tastes and catalogs, taste clusters, popularity, 2-6 artwork "
        "variants per item. Deterministic for a seed; scales to 1M users x 20M interactions "
        "in bounded memory."
    )
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    parser.add_argument("--users", type=int, default=10_000, metavar="N", help="users (10000)")
    parser.add_argument("--items", type=int, default=2_000, metavar="M", help="items (2000)")
    parser.add_argument(
        "--interactions",
        type=int,
        default=None,
        metavar="N",
        help="target interaction rows (default: about 20 per user)",
    )
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (0)")
    parser.add_argument(
        "--format",
        choices=("csv", "parquet"),
        default="csv",
        help="file format of every contract file (csv)",
    )


def run(args: argparse.Namespace) -> int:
    from training.demo_data import generate, stderr_progress

    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out} exists and is not a folder")
    summary = generate(
        args.out,
        users=args.users,
        items=args.items,
        interactions=args.interactions,
        seed=args.seed,
        fmt=args.format,
        progress=stderr_progress(),
    )
    print(
        f"wrote {summary.users} users, {summary.items} items, {summary.artwork} artwork "
        f"variants, {summary.interactions} interactions to {summary.out_dir} "
        f"({args.format}, {summary.seconds:.1f}s)",
        file=sys.stdout,
    )
    return 0
