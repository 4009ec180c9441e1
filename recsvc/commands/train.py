"""``recsvc train``: fit the models on contract files and publish an artifact bundle.

Feature store: after publishing, user profiles and item attributes are materialized into
the store named by ``--feature-store`` (a URL as ``recsvc serve`` takes). Without the flag
nothing is materialized (training stays a pure file-to-bundle step); ``make run`` passes
the same URL to ``train`` and ``serve``. ``--feature-store auto`` means
``sqlite:///<ROOT>/feature-store.sqlite`` (next to the bundles).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from recsvc.errors import UsageError

AUTO_STORE = "auto"
REFUSED = 3  # exit code: --promote if-better kept current (see `recsvc retrain`)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Load and validate the contract files in DIR (interactions, optional users, items, "
        "artwork as CSV or Parquet), fit the collaborative model (ALS by default, with a "
        "bounded hyperparameter search; low-rank EASE instead when it validates better on "
        "a small catalog), the LightFM hybrid for cold start and regional "
        "popularity, build the FAISS item index and precomputed candidate lists, and publish "
        "them atomically as ROOT/<version>, pointing ROOT/current at it. A failed run leaves "
        "ROOT untouched."
    )
    parser.add_argument(
        "--data",
        required=True,
        action="append",
        metavar="DIR",
        help="input folder; repeat it to train on several (contract files + `recsvc events "
        "export` folders; duplicates removed). With --engine spark: one URI Spark reads",
    )
    parser.add_argument("--out", required=True, type=Path, metavar="ROOT", help="bundle root")
    parser.add_argument(
        "--model",
        choices=("als", "bpr", "ease-lowrank", "ease-als"),
        default=None,
        help=(
            "CF model (als; ease-lowrank = EASE with dropout emphasis and heavy-user"
            " down-weighting, factorized into embeddings; ease-als = ease-lowrank blended"
            " with a linear ALS read-out; both for catalogs <= 20k items; by default als"
            " is compared with them on validation folds and the best ships)"
        ),
    )
    parser.add_argument("--factors", type=int, default=None, metavar="N", help="latent factors")
    parser.add_argument("--iterations", type=int, default=None, metavar="N", help="epochs")
    parser.add_argument(
        "--no-tune",
        dest="tune",
        action="store_false",
        default=None,
        help="skip the hyperparameter search (use defaults / --factors)",
    )
    parser.add_argument(
        "--tune-budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help="wall-clock budget of the search (300)",
    )
    parser.add_argument(
        "--no-lowrank-ease",
        dest="lowrank_ease",
        action="store_false",
        default=None,
        help="ship ALS without comparing it on validation against low-rank EASE "
        "(by default, with the search on, the better of the two ships, for catalogs of at "
        "most 20000 items)",
    )
    parser.add_argument(
        "--no-hybrid", dest="hybrid", action="store_false", default=None, help="skip LightFM"
    )
    parser.add_argument(
        "--candidates", type=int, default=None, metavar="C", help="candidates per user (200)"
    )
    parser.add_argument(
        "--index-threshold",
        type=int,
        default=None,
        metavar="N",
        help="catalog size from which FAISS uses HNSW instead of exact search (50000)",
    )
    parser.add_argument("--seed", type=int, default=None, metavar="S", help="random seed (42)")
    parser.add_argument(
        "--threads", type=int, default=None, metavar="N", help="batch threads (0 = all cores)"
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="YAML/JSON file of TrainConfig settings (flags win over it)",
    )
    parser.add_argument(
        "--feature-store",
        default=None,
        metavar="URL",
        help="after publishing, materialize profiles/items into this store "
        "(sqlite:///PATH | redis://HOST:PORT/DB | redis+cluster://SEEDS | "
        "auto = sqlite:///ROOT/feature-store.sqlite | none = do not materialize)",
    )
    parser.add_argument(
        "--report",
        type=Path,
        default=None,
        metavar="FILE",
        help="also write a JSON summary (version, per-stage seconds and peak RSS) to FILE",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    add_gate_arguments(parser, default="always")
    add_engine_arguments(parser)
    parser.add_argument(
        "--no-validation",
        dest="validate",
        action="store_false",
        help="--engine spark: skip the held-out NDCG@10 (a second ALS fit on 80%% of the cells)",
    )


def add_gate_arguments(parser: argparse.ArgumentParser, default: str) -> None:
    """``--promote`` and the gate's holdout and tolerances (train, retrain)."""
    parser.add_argument(
        "--promote",
        choices=("always", "never", "if-better"),
        default=default,
        help=f"make the new version current: always, never, or if-better = only when it is "
        f"not worse than current beyond the tolerances on a holdout of the newest "
        f"interactions (exit 3 when refused; default {default})",
    )
    parser.add_argument(
        "--holdout-fraction",
        type=float,
        default=0.1,
        metavar="F",
        help="if-better: share of the newest interactions held out (0.1)",
    )
    parser.add_argument(
        "--ndcg-tolerance",
        type=float,
        default=0.05,
        metavar="REL",
        help="if-better: largest relative NDCG@10 drop accepted (0.05)",
    )
    parser.add_argument(
        "--coverage-tolerance",
        type=float,
        default=0.10,
        metavar="REL",
        help="if-better: largest relative coverage@10 drop accepted (0.10)",
    )


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """``--engine local|spark``, ``--spark-master``, ``--spark-conf`` (train, export, audience)."""
    parser.add_argument(
        "--engine",
        choices=("local", "spark"),
        default="local",
        help="local (this process) or spark (pip install 'recsvc[spark]'; docs/spark.md)",
    )
    parser.add_argument(
        "--spark-master",
        default=None,
        metavar="URL",
        help="spark master: local[N] (default local[2]), spark://HOST:7077, yarn, k8s://...",
    )
    parser.add_argument(
        "--spark-conf",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="extra Spark setting, repeatable (e.g. spark.executor.memory=4g)",
    )


def spark_settings(args: argparse.Namespace) -> Any:
    """The SparkSettings of ``--spark-master``/``--spark-conf``/progress flags."""
    from recsvc.export.spark import SparkSettings, parse_spark_conf, require_pyspark

    require_pyspark()
    quiet = bool(getattr(args, "quiet", False) or getattr(args, "no_progress", False))
    return SparkSettings(
        master=args.spark_master, conf=parse_spark_conf(args.spark_conf), progress=not quiet
    )


def _config(args: argparse.Namespace) -> Any:
    from training.config import TrainConfig

    overrides = {
        "model": args.model,
        "factors": args.factors,
        "iterations": args.iterations,
        "tune": args.tune,
        "tune_budget_s": args.tune_budget,
        "lowrank_ease": args.lowrank_ease,
        "hybrid": args.hybrid,
        "candidates": args.candidates,
        "index_threshold": args.index_threshold,
        "seed": args.seed,
        "threads": args.threads,
    }
    if args.config is not None:
        return TrainConfig.from_file(args.config, **overrides)
    return TrainConfig.checked(
        where="recsvc train", **{k: v for k, v in overrides.items() if v is not None}
    )


def store_url(value: str | None, root: Path) -> str | None:
    """The store to materialize into: None without the flag or with ``none``; a bad URL
    is refused here, before any training, as opening it would refuse it after."""
    from feature_store.errors import FeatureStoreConfigError
    from feature_store.factory import check_url

    if value is None or value.strip().lower() == "none":
        return None
    if value == AUTO_STORE:
        return f"sqlite:///{(root / 'feature-store.sqlite').resolve()}"
    try:
        check_url(value)
    except FeatureStoreConfigError as exc:
        raise UsageError(f"--feature-store: {exc}") from None
    return value


def run(args: argparse.Namespace) -> int:
    from recsvc.commands.promotion import gate_hooks
    from training.pipeline import run_training

    if args.engine == "spark" and (len(args.data) > 1 or args.promote != "always"):
        raise UsageError("--engine spark takes one --data and --promote always")
    for folder in args.data if args.engine != "spark" else ():
        if not Path(folder).is_dir():
            raise UsageError(f"--data {folder}: no such folder")
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out} exists and is not a folder")
    config = _config(args)
    url = store_url(args.feature_store, args.out)
    if args.engine == "spark":
        args.data = args.data[0]
        return _run_spark(args, config, url)
    load, gate = gate_hooks(args, config)
    data = Path(args.data[0])
    result = run_training(data, args.out, config, verbose=not args.quiet, load=load, gate=gate)
    flip = f"{args.out}/current -> it" if result.promoted else f"{args.out}/current unchanged"
    print(f"published {result.path} (version {result.version}); {flip}")
    if result.promotion is not None:
        p = result.promotion
        print(f"promotion: {p['decision']} ({p['mode']}): {p['reason']}")
    if args.report is not None:
        summary = {"version": result.version, "path": str(result.path), **result.stages}
        args.report.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if url is not None:
        _materialize(result.dataset, url, quiet=args.quiet)
    elif args.feature_store is None and not args.quiet:
        print(
            "profiles not materialized: pass --feature-store URL (the store `recsvc serve` "
            "reads) so users known only by their features get cold-start answers",
            file=sys.stderr,
        )
    return 0 if result.promoted or args.promote != "if-better" else REFUSED


def _run_spark(args: argparse.Namespace, config: Any, store: str | None) -> int:
    """``--engine spark``: the data URI may be any path Spark reads (hdfs://, s3a://...)."""
    from training.spark.train import train_spark

    settings = spark_settings(args)
    if store is not None:
        raise UsageError("--feature-store with --engine spark: run `recsvc materialize` separately")
    result = train_spark(
        str(args.data), args.out, config, settings, validate=args.validate, verbose=not args.quiet
    )
    print(f"published {result.path} (version {result.version}); {args.out}/current -> it")
    if args.report is not None:
        summary = {"version": result.version, "path": str(result.path), **result.stages}
        args.report.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return 0


def _materialize(dataset: Any, url: str, *, quiet: bool) -> None:
    """Profiles/items into the online store (the store area's ``training.materialize``)."""
    try:
        module = importlib.import_module("training.materialize")
    except ImportError:
        # Call site kept for builds without the store package; training itself succeeded.
        print(
            f"feature store {url}: skipped, training.materialize is not available", file=sys.stderr
        )
        return
    last = [0.0]

    def progress(table: str, done: int, total: int) -> None:
        now = time.monotonic()
        if not quiet and (now - last[0] > 5 or done == total):
            print(f"  materialize {table}: {done}/{total}", file=sys.stderr, flush=True)
            last[0] = now

    start = time.perf_counter()
    counts = module.materialize(dataset, url, progress=progress)
    print(
        f"materialized {counts.get('users', 0)} user profiles and {counts.get('items', 0)} "
        f"items into {url} ({time.perf_counter() - start:.1f}s)"
    )
