"""``recsvc export``: top-N recommendations per user to CSV or Parquet."""

from __future__ import annotations

import argparse
import os
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
users:
  --users FILE      CSV/Parquet with a user_id column (other columns are profile features,
                    e.g. region: they win over the stored profile and serve cold start),
                    or a text file with one id per line
  --segment EXPR    filter by user features, e.g.
                      region in ("US-9", "CA") and age_bucket == "25-34"
                    operators: == != in, not in, and, or, not, parentheses; values quoted
  neither           every user the model knows; both: the file's users in the segment

Unknown users get cold-start recommendations from their features, or regional/global
popularity when nothing is known; the summary counts each kind. Rows (in this order):
user_id, rank (1-based), item_id, score, artwork_variant_id, model_version. Output is
written to a temp file and renamed at the end; FILE.manifest.json records arguments,
counts, timings and the sha256 of FILE.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    add_bundle_and_output(parser)
    parser.add_argument(
        "--k", required=True, type=int, metavar="N", help="recommendations per user"
    )
    parser.add_argument("--users", type=Path, metavar="FILE", help="users to export")
    parser.add_argument("--segment", metavar="EXPR", help="user-feature filter expression")
    parser.add_argument(
        "--suppress",
        type=Path,
        metavar="FILE",
        help="user_ids to leave out; with an item_id column, pairs never to "
        "recommend (blank item_id = the whole user)",
    )
    add_feature_store(parser)
    parser.add_argument(
        "--include-seen", action="store_true", help="keep items the user already interacted with"
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=2048,
        metavar="N",
        help="users per batch (memory is bounded by this; default 2048)",
    )
    parser.add_argument(
        "--policy",
        default=os.environ.get("RECSVC_BANDIT_POLICY", "default"),
        metavar="NAME",
        help="artwork policy, as serving's bandit policy (best posterior mean, no "
        "exploration; default: $RECSVC_BANDIT_POLICY, else 'default' = each item's "
        "default variant)",
    )
    parser.add_argument(
        "--allow-empty",
        action="store_true",
        help="write an empty file when no user is selected (else that is an error, exit 2)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress output")
    add_engine_arguments(parser)  # with spark, --out is a Parquet dataset directory


def run(args: argparse.Namespace) -> int:
    from recsvc.export.job import ExportOptions, prepare_export

    options = ExportOptions(
        artifacts=args.artifacts,
        out=args.out,
        k=args.k,
        users=args.users,
        segment=args.segment,
        suppress=args.suppress,
        feature_store=feature_store_url(args.feature_store),
        include_seen=args.include_seen,
        seen_events=seen_event_types(args.seen_events),
        chunk_size=args.chunk_size,
        policy=args.policy,
        progress=not args.no_progress,
        allow_empty=args.allow_empty,
    )
    if args.engine == "spark":
        from recsvc.export.spark import SparkExportOptions, export_spark

        manifest = export_spark(SparkExportOptions(options, spark_settings(args)))
    else:
        manifest = prepare_export(options).run()
    counts = manifest["counts"]
    kinds = ", ".join(f"{k} {v}" for k, v in counts["by_kind"].items()) or "none"
    print(
        f"wrote {counts['rows']} rows for {counts['users_exported']} users to {args.out} "
        f"(model {manifest['model_version']}; {kinds}; suppressed "
        f"{counts['users_suppressed']}, outside segment {counts['users_outside_segment']}, "
        f"fewer than k {counts['users_with_fewer_than_k']}) in "
        f"{manifest['timings_s']['recommend_and_write_s']:.1f}s",
        file=sys.stdout,
    )
    return 0
