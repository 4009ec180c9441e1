"""``recsvc bundles list|promote VERSION|rollback|prune --keep N``: the published versions
under a bundle root.

``promote`` and ``rollback`` validate the target the way a server's hot swap does (load,
derive the serving tables, smoke-test recommendations) and then flip ``current``
atomically; a server watching the root swaps within its poll interval. ``prune`` never
deletes ``current`` nor a version a running or scheduled experiment pins (read from the
feature store, so it must be reachable).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from feature_store.factory import DEFAULT_STORE_URL
from recsvc.bundle import list_versions, retention
from recsvc.errors import UsageError

STORE_ENV = "RECSVC_FEATURE_STORE"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "List, promote, roll back and prune the bundle versions under ROOT. promote and "
        "rollback validate the version like a server's hot swap, then flip ROOT/current "
        "atomically; prune keeps the N newest and never deletes current or a version an "
        "experiment pins."
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--artifacts", required=True, type=Path, metavar="ROOT", help="bundle root")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = sub.add_parser("list", parents=[common], help="versions newest first, with metrics")
    show.add_argument("--format", choices=("table", "json"), default="table")
    promote = sub.add_parser("promote", parents=[common], help="validate VERSION, make it current")
    promote.add_argument("version", metavar="VERSION")
    sub.add_parser(
        "rollback",
        parents=[common],
        help="make the previous valid version current (skips gate-refused and broken ones)",
    )
    prune = sub.add_parser("prune", parents=[common], help="delete all but the N newest")
    prune.add_argument("--keep", required=True, type=int, metavar="N", help="versions to keep")
    prune.add_argument(
        "--feature-store",
        metavar="URL",
        default=os.environ.get(STORE_ENV, DEFAULT_STORE_URL),
        help=f"where experiments (and their pinned versions) live "
        f"(default: ${STORE_ENV} or {DEFAULT_STORE_URL})",
    )
    prune.add_argument("--dry-run", action="store_true", help="print the plan, delete nothing")


def serving_check(path: Path) -> None:
    """The hot swap's validation: load, derive and smoke-test (raises on anything wrong)."""
    from recsvc.serving.hotswap import load_model

    load_model(path, "default")


def run(args: argparse.Namespace) -> int:
    root: Path = args.artifacts
    if not root.is_dir():
        raise UsageError(f"--artifacts {root}: no such folder")
    if args.action == "list":
        return _list(root, args.format)
    if args.action == "promote":
        before = retention.promote(root, args.version, serving_check)
        print(f"current: {before or '(none)'} -> {args.version}")
        return 0
    if args.action == "rollback":
        target, skipped = retention.rollback_target(root, serving_check)
        for line in skipped:
            print(f"skipped {line}", file=sys.stderr)
        before = retention.promote(root, target, serving_check)
        print(f"current: {before or '(none)'} -> {target}")
        return 0
    return _prune(root, args.keep, args.feature_store, args.dry_run)


def _list(root: Path, fmt: str) -> int:
    data = retention.list_summaries(root)
    if fmt == "json":
        print(json.dumps(data, indent=2, default=str))
        return 0
    print(f"{'':2}{'version':<32} {'model':<14} {'promotion':<10} {'ndcg@10':>8}  created")
    # ndcg@10: the gate's score of the version on its holdout (blank without a gate run)
    for row in data["versions"]:
        ndcg = row["promotion"]["candidate"].get("ndcg@10")
        mark = "*" if row["current"] else ""
        decision = row["promotion"]["decision"] or "-"
        shown = f"{ndcg:.4f}" if isinstance(ndcg, int | float) else "-"
        error = f"  {row['error']}" if row["error"] else ""
        print(
            f"{mark:2}{row['version']:<32} {row['model'] or '-':<14} {decision:<10} "
            f"{shown:>8}  {row['created']}{error}"
        )
    if data["current"] is None:
        print("(no valid current)", file=sys.stderr)
    return 0


def pinned_versions(store_url: str) -> set[str]:
    """Versions that running or scheduled experiments pin (``model_version``)."""
    from feature_store.factory import open_store
    from recsvc.experiments.manage import experiment_state, stored_experiments

    store = open_store(store_url)
    try:
        experiments = stored_experiments(store)
    finally:
        store.close()
    return {
        str(v.overrides.model_version)
        for e in experiments.values()
        if experiment_state(e) in ("running", "scheduled")
        for v in e.variants
        if v.overrides.model_version
    }


def _prune(root: Path, keep: int, store_url: str, dry_run: bool) -> int:
    if keep < retention.MIN_KEEP:
        raise UsageError(f"--keep must be >= {retention.MIN_KEEP}, got {keep}")
    pinned = pinned_versions(store_url)
    doomed = retention.prune_plan(root, keep, pinned)
    if dry_run:
        print(f"would delete {len(doomed)} version(s): {', '.join(doomed) or '-'}")
        return 0
    deleted = retention.delete_versions(root, doomed, pinned)
    kept_pins = sorted(pinned & set(list_versions(root)))
    print(f"deleted {len(deleted)} version(s): {', '.join(deleted) or '-'}")
    if kept_pins:
        print(f"kept (pinned by experiments): {', '.join(kept_pins)}")
    return 0
