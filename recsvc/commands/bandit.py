"""``recsvc bandit evaluate``: off-policy estimates of an artwork policy's click rate."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

EPILOG = """\
formats:
  obd      Open Bandit Dataset CSVs (Saito et al. 2021): --logs is a CSV, a campaign folder
           or a logging-policy folder holding all/ men/ women/ (pick one with --campaign)
  recsvc   our logs: the folder `recsvc bandit export-logs --out DIR` writes (exposure and
           event Parquet files: names containing "exposure" and "event"), or the exposure
           file itself

policies:
  random   uniform over the candidates (OBD: all items; recsvc: the item's variants)
  default  recsvc only: always the item's first variant
  ts-item  Beta-Bernoulli Thompson sampling per (item, variant), no context
  ts       Thompson sampling with context buckets (OBD: user_feature_0; recsvc: region,
           segment) backed off to the item level
  lints    linear Thompson sampling on user features (and CF taste, recsvc) x theme
Learning policies are trained on the first --train-fraction of the rounds in time order
and evaluated on the rest; fixed ones use every round. recsvc learning policies need the
bundle they serve with (--artifacts).

Output: the logged (on-policy) click rate of the evaluated rounds and, for the target
policy, replay / IPS / SNIPS / DR estimates, each with a percentile bootstrap 95% CI. The
replay row is always printed; it is unbiased only for uniform-random logs, so for other
logs it has no value (nan) and says so.
"""

EXPORT_EPILOG = """\
Writes DIR/exposure.parquet (one row per served request: items, variants, propensities,
policy, policy_key, context, experiment arm, model version) and DIR/events.parquet (the
event log), the input of `recsvc bandit evaluate --format recsvc --logs DIR`. The logs are
bounded by the store's log_max_len (oldest rows trimmed).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    sub = parser.add_subparsers(dest="bandit_command", metavar="ACTION", required=True)
    ev = sub.add_parser(
        "evaluate",
        help="estimate a policy's click rate from logged data (replay, IPS, SNIPS, DR)",
        description="Estimate a policy's click rate from logged bandit feedback.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ev.add_argument("--logs", required=True, type=Path, metavar="FILE|DIR", help="logged data")
    ev.add_argument("--format", required=True, choices=("recsvc", "obd"), help="log format")
    ev.add_argument("--policy", required=True, metavar="NAME", help="target policy (see below)")
    ev.add_argument(
        "--campaign", default="all", choices=("all", "men", "women"), help="OBD campaign"
    )
    ev.add_argument("--artifacts", type=Path, metavar="ROOT", help="bundle (recsvc policies)")
    ev.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="resamples (1000)")
    ev.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (0)")
    ev.add_argument(
        "--train-fraction",
        type=float,
        default=0.5,
        metavar="F",
        help="share of rounds (oldest first) that learning policies train on (0.5)",
    )
    ev.add_argument(
        "--greedy",
        action="store_true",
        help="evaluate the non-exploring policy (best posterior mean) instead of its TS draws",
    )
    ev.add_argument(
        "--reward-model",
        default="item_position",
        choices=("item_position", "logistic"),
        help="DR reward model for OBD (recsvc uses per item-variant means)",
    )
    ev.add_argument("--json", type=Path, metavar="FILE", help="also write the report as JSON")
    ex = sub.add_parser(
        "export-logs",
        help="write the exposure and event logs of a feature store as Parquet (for evaluate)",
        description="Export a feature store's exposure and event logs for off-policy evaluation.",
        epilog=EXPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ex.add_argument("--feature-store", required=True, metavar="URL",
                    help="sqlite:///PATH or redis://HOST:PORT/DB (as recsvc serve)")  # fmt: skip
    ex.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")


def _table(report: dict[str, Any]) -> str:
    lines = [
        f"source: {report['source']}",
        f"policy: {report['policy']}  rounds evaluated: {report['n_rounds']}  "
        f"trained on: {report['n_train_rounds']}",
        f"{'estimator':<10} {'ctr':>9} {'ci_low':>9} {'ci_high':>9}  note",
    ]
    for e in [report["logged"], *report["estimates"]]:
        lines.append(
            f"{e['estimator']:<10} {e['value']:>9.5f} {e['ci_low']:>9.5f} {e['ci_high']:>9.5f}"
            f"  {e.get('note', '')}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from recsvc.errors import UsageError

    if args.bandit_command == "export-logs":
        return export_logs(args.feature_store, args.out)
    if args.bootstrap < 0:
        raise UsageError(f"--bootstrap must be >= 0, got {args.bootstrap}")
    if not args.logs.exists():
        raise UsageError(f"--logs {args.logs}: no such file or directory")
    report = evaluate(args)
    print(_table(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def export_logs(url: str, out: Path) -> int:
    """``recsvc bandit export-logs``: both logs of the store at ``url`` under ``out``."""
    from feature_store.errors import FeatureStoreError
    from feature_store.factory import open_store
    from recsvc.errors import UsageError

    try:
        store = open_store(url)
    except (FeatureStoreError, ValueError) as exc:
        raise UsageError(f"--feature-store {url}: {exc}") from None
    try:
        n_exp = store.export_log("exposure", out / "exposure.parquet")
        n_ev = store.export_log("event", out / "events.parquet")
    except FeatureStoreError as exc:
        raise UsageError(f"--feature-store {url}: {exc}") from None
    finally:
        store.close()
    print(f"wrote {out / 'exposure.parquet'} ({n_exp} requests) and "
          f"{out / 'events.parquet'} ({n_ev} events)")  # fmt: skip
    return 0


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from recsvc.bandit.logs import read_obd, read_recsvc_logs
    from recsvc.bandit.offline import (
        OBD_POLICIES,
        RECSVC_POLICIES,
        evaluate_obd,
        evaluate_recsvc,
    )
    from recsvc.errors import UsageError

    common = {
        "train_fraction": args.train_fraction,
        "explore": not args.greedy,
        "n_bootstrap": args.bootstrap,
        "seed": args.seed,
    }
    if args.format == "obd":
        if args.policy not in OBD_POLICIES:
            raise UsageError(f"--policy {args.policy}: for OBD one of {', '.join(OBD_POLICIES)}")
        log = read_obd(args.logs, args.campaign)
        return evaluate_obd(log, args.policy, reward_model=args.reward_model, **common).as_dict()
    if args.policy not in RECSVC_POLICIES:
        raise UsageError(f"--policy {args.policy}: one of {', '.join(RECSVC_POLICIES)}")
    bundle = None
    if args.artifacts is not None:
        from recsvc.bundle import load_bundle

        bundle = load_bundle(args.artifacts)
    frame = read_recsvc_logs(args.logs)
    return evaluate_recsvc(frame, args.policy, bundle, **common).as_dict()
