"""``recsvc audience``: the top N users per item (who should get the email about X?)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recsvc.commands.common import (
    add_bundle_and_output,
    add_feature_store,
    feature_store_url,
    seen_event_types,
)
from recsvc.commands.train import add_engine_arguments, spark_settings

EPILOG = """\
items (exactly one):
  --items FILE         CSV/Parquet with an item_id column, or a text file, one id per line
  --item-filter EXPR   item-feature filter, e.g.  category in ("books", "games")
users:
  --segment EXPR       user-feature filter, e.g.  region == "CA" and age_bucket != "18-24"
  --suppress FILE      user_ids to leave out (with item_id: single user,item pairs)

Rows (in this order): item_id, rank (1-based), user_id, score (inner product of the user's
and the item's vectors). Users who already interacted with the item, or live in a region
where it is not sold, are left out (the same rules as online). The FAISS index of user
vectors is built on first use and cached in the bundle directory (cache/).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    add_bundle_and_output(parser)
    parser.add_argument("--top", required=True, type=int, metavar="N", help="users per item")
    parser.add_argument("--items", type=Path, metavar="FILE", help="items to find users for")
    parser.add_argument("--item-filter", metavar="EXPR", help="item-feature filter expression")
    parser.add_argument("--segment", metavar="EXPR", help="user-feature filter expression")
    parser.add_argument("--suppress", type=Path, metavar="FILE", help="suppression list")
    parser.add_argument(
        "--include-seen",
        action="store_true",
        help="keep users who already interacted with the item",
    )
    add_feature_store(parser)
    parser.add_argument(
        "--allow-empty",
        action="store_true",
        help="write an empty file when no user is selected (else that is an error, exit 2)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress output")
    add_engine_arguments(parser)  # with spark, --out is a Parquet dataset directory


def run(args: argparse.Namespace) -> int:
    from recsvc.export.audience import AudienceOptions, prepare_audience

    options = AudienceOptions(
        artifacts=args.artifacts,
        out=args.out,
        top=args.top,
        items=args.items,
        item_filter=args.item_filter,
        segment=args.segment,
        suppress=args.suppress,
        include_seen=args.include_seen,
        progress=not args.no_progress,
        allow_empty=args.allow_empty,
        feature_store=feature_store_url(args.feature_store),
        seen_events=seen_event_types(args.seen_events),
    )
    if args.engine == "spark":
        from recsvc.export.spark import SparkAudienceOptions, audience_spark

        manifest = audience_spark(SparkAudienceOptions(options, spark_settings(args)))
    else:
        manifest = prepare_audience(options).run()
    counts = manifest["counts"]
    print(
        f"wrote {counts['rows']} rows for {counts['items']} items to {args.out} "
        f"(model {manifest['model_version']}; {counts['eligible_users']} eligible users; "
        f"user index {manifest['user_index']}; unknown items skipped "
        f"{counts['unknown_items_skipped']}) in {manifest['timings_s']['search_and_write_s']:.1f}s",
        file=sys.stdout,
    )
    return 0
