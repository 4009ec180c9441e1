"""``recsvc evaluate``: offline metrics of every model against the baselines, one table."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from recsvc.errors import UsageError

MODEL_CHOICES = ("als", "bpr", "lightfm", "popularity", "region_popularity", "ease")
# Opt-in: EASE/EDLAE factorized into embeddings, and its blend with a linear ALS read-out
# (their defaults; `train` validates them).
EXTRA_MODELS = ("ease-lowrank", "ease-als")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Split the interactions, fit every model on the training part and rank the whole "
        "catalog for each user (items seen in training excluded). Prints one table, one row "
        "per model: precision@k, recall@k, NDCG@k, MAP@k and catalog coverage. Baselines "
        "(popularity; EASE when the catalog has at most 20k items) are in the same table."
    )
    parser.add_argument(
        "--data", required=True, type=Path, metavar="DIR", help="folder with the contract files"
    )
    parser.add_argument(
        "--split",
        default="random:0.2",
        metavar="KIND:F",
        help="random:F (random fraction F of user-item pairs held out) or time:F (the latest "
        "F of pairs, one global cut); default random:0.2",
    )
    parser.add_argument("--seed", type=int, default=42, metavar="N", help="random seed (42)")
    parser.add_argument("--k", type=int, default=10, metavar="K", help="cut-off k (10)")
    parser.add_argument(
        "--json", type=Path, default=None, metavar="FILE", help="also write the results as JSON"
    )
    parser.add_argument(
        "--cold-start-users",
        type=float,
        default=None,
        metavar="F",
        help="also hold out a fraction F of whole users and recommend for them from their "
        "features only (hybrid LightFM, regional popularity) vs global popularity",
    )
    parser.add_argument(
        "--models",
        nargs="+",
        choices=(*MODEL_CHOICES, *EXTRA_MODELS),
        default=list(MODEL_CHOICES),
        metavar="NAME",
        help=f"models to evaluate (default: all of {', '.join(MODEL_CHOICES)}; also "
        f"{', '.join(EXTRA_MODELS)})",
    )
    parser.add_argument(
        "--ease-lambda",
        type=float,
        nargs="+",
        default=[100.0, 500.0],
        metavar="L",
        help="EASE regularization values, one row each (100 500)",
    )
    parser.add_argument(
        "--tune",
        action="store_true",
        help="also run the bounded ALS search on a validation split of the training part "
        "and add a row 'als (tuned)'",
    )
    parser.add_argument(
        "--tune-budget", type=float, default=300.0, metavar="S", help="search budget in s (300)"
    )


def run(args: argparse.Namespace) -> int:
    from training.data import load_dataset
    from training.evaluation import evaluate, parse_split

    if args.k <= 0:
        raise UsageError(f"--k must be a positive integer, not {args.k}")
    if args.cold_start_users is not None and not 0.0 < args.cold_start_users < 1.0:
        raise UsageError(
            f"--cold-start-users must be a fraction in (0, 1), not {args.cold_start_users}"
        )
    parse_split(args.split)
    if args.json is not None and args.json.parent and not args.json.parent.exists():
        raise UsageError(f"--json {args.json}: folder {args.json.parent} does not exist")
    start = time.perf_counter()
    dataset = load_dataset(args.data)

    def progress(message: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f}s] {message}", file=sys.stderr, flush=True)

    report = evaluate(
        dataset,
        split=args.split,
        seed=args.seed,
        k=args.k,
        models=args.models,
        ease_lambdas=args.ease_lambda,
        cold_start_users=args.cold_start_users,
        tune=args.tune,
        tune_budget_s=args.tune_budget,
        progress=progress,
    )
    info = report.info
    print(
        f"split {args.split} seed {args.seed}: {info['users']} users, {info['items']} items, "
        f"{info['train_pairs']} train / {info['test_pairs']} test pairs"
    )
    print(report.table())
    for note in report.notes:
        print(f"note: {note}")
    if args.json is not None:
        args.json.write_text(json.dumps(report.as_dict(), indent=2, default=str))
        print(f"wrote {args.json}")
    return 0
