"""Quality benchmark: every model vs the baselines on MovieLens, and cold start on demo data.

1. ml-latest-small ratings (every rating = an interaction), random 80/20 split of the
   (user, item) pairs with seed 42, k=10: ALS (tuned defaults), ALS tuned by the bounded
   search on a validation split of the training 80% only (the model ``train`` ships),
   BPR, LightFM WARP, popularity, low-rank EASE/EDLAE with its defaults and with the
   lambda/dropout/rank its validation grid chose (the embedding model ``train`` may ship
   instead of ALS), its blend with ALS (ease-als) with the weight chosen on the same
   folds, and EASE over λ in 100..1000. The "shipped" row is the model ``train`` would
   ship, chosen exactly as the pipeline does (tuned ALS vs validated ease-lowrank, then
   ease-lowrank vs ease-als, on the search's validation folds of the training 80%).
   Target: shipped NDCG@10 >= best EASE NDCG@10.
2. Cold start on demo data: held-out whole users, features only; target: hybrid (or
   regional popularity) NDCG@10 >= 1.10x global popularity. MovieLens: n/a (no features).

    .venv/bin/python -m tests.benchmarks.bench_quality [--quick] [--tune-budget S]

Writes ``$BENCH_OUT/quality.json`` and ``quality.png``; the write-up is
docs/benchmarks/quality.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("SHARED_DATA", REPO.parent / "shared" / "data"))
BENCH_OUT = Path(os.environ.get("BENCH_OUT", REPO / "var" / "bench"))


def log(message: str) -> None:
    print(f"[quality {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def movielens_dataset(path: Path) -> Any:
    from training.data import dataset_from_frames

    ratings = pd.read_csv(path)
    frame = pd.DataFrame(
        {
            "user_id": ratings["userId"].astype(str),
            "item_id": ratings["movieId"].astype(str),
            "timestamp": ratings["timestamp"].astype("int64"),
            "event_type": "rating",
        }
    )
    return dataset_from_frames(frame)


def movielens(quick: bool, tune_budget: float, tune_trials: int) -> dict[str, Any]:
    from training.evaluation import evaluate
    from training.models.blend import EASEALSBlendModel
    from training.models.ease import EASELowRankModel

    path = SHARED_DATA / "ml-latest-small" / "ratings.csv"
    dataset = movielens_dataset(path)
    lambdas = (100.0, 200.0, 500.0) if quick else (100.0, 200.0, 500.0, 1000.0)
    models = (
        ["als", "popularity", "ease-lowrank", "ease"]
        if quick
        else ["als", "bpr", "lightfm", "popularity", "ease-lowrank", "ease"]
    )
    report = evaluate(
        dataset,
        split="random:0.2",
        seed=42,
        k=10,
        models=models,
        ease_lambdas=lambdas,
        cold_start_users=0.2,
        tune=True,
        tune_budget_s=tune_budget,
        tune_trials=tune_trials,
        progress=log,
    )
    doc = report.as_dict()
    ease = {k: v["ndcg"] for k, v in report.rows.items() if k.startswith("ease λ")}
    best_ease_name = max(ease, key=lambda k: ease[k])
    train, test = train_test(dataset)
    selection = shipped_choice(dataset, train, report.info["tuning"])
    doc["selection"] = selection
    validated = "ease-lowrank (validated)"
    lowrank = EASELowRankModel(**selection["ease-lowrank"]["params"])
    doc["models"][validated] = report.rows[validated] = validated_lowrank(
        dataset, train, test, lowrank
    )
    fitted: dict[str, tuple[str, Any]] = {"ease-lowrank": (validated, lowrank)}
    if "ease-als" in selection:  # scored on validation when ease-lowrank beat ALS there
        blended = "ease-als (validated)"
        blend = EASEALSBlendModel(**selection["ease-als"]["params"])
        doc["models"][blended] = report.rows[blended] = validated_lowrank(
            dataset, train, test, blend
        )
        fitted["ease-als"] = (blended, blend)
    print(report.table())
    shipped_row, shipped_model = fitted.get(selection["winner"], ("als (tuned)", None))
    shipped = report.rows[shipped_row]["ndcg"]
    if shipped_model is not None:
        lam = float(report.rows[best_ease_name]["params"]["lambda"])
        doc["paired_vs_best_ease"] = paired_vs_ease(dataset, train, test, shipped_model, lam)
    doc["target"] = {
        "shipped": shipped_row,
        "shipped_ndcg": shipped,
        "best_ease": best_ease_name,
        "best_ease_ndcg": ease[best_ease_name],
        "ratio": shipped / ease[best_ease_name],
        "met": shipped >= ease[best_ease_name],
    }
    return doc


def train_test(dataset: Any) -> tuple[Any, Any]:
    """(train, test) interaction matrices of the random 80/20 split with seed 42."""
    from training.data import build_matrix
    from training.evaluation import split_interactions

    train_rows, test_rows = split_interactions(dataset.interactions, "random:0.2", 42)
    train = build_matrix(dataset, train_rows)
    test = build_matrix(dataset, test_rows, user_ids=train.user_ids, item_ids=train.item_ids)
    return train, test


def shipped_choice(dataset: Any, train: Any, tuning: dict[str, Any]) -> dict[str, Any]:
    """What ``train`` would ship from the training 80%: the pipeline's own comparison of
    the tuned ALS (its fold scores from the search) with ease-lowrank on the same folds."""
    from training.config import TrainConfig
    from training.pipeline import compare_lowrank
    from training.stages import StageLog

    log("choosing the shipped model: tuned ALS vs ease-lowrank on validation folds")
    return compare_lowrank(
        dataset,
        train,
        TrainConfig(seed=42),
        dict(tuning["best_params"]),
        tuning,
        StageLog(prefix="quality select"),
    )


def validated_lowrank(dataset: Any, train: Any, test: Any, model: Any) -> dict[str, Any]:
    """ease-lowrank with the lambda/dropout/rank the validation grid chose, or ease-als with
    the blend weight chosen on the same folds (``model``), fitted on the split's training
    80% and scored on its test 20% (the rows of the candidates that may ship)."""
    from training.evaluation import fit_and_score

    log(f"fitting {model.name} (validated) {model.params}")
    return fit_and_score(model, train, test.matrix, dataset, 10)


def paired_vs_ease(
    dataset: Any, train: Any, test: Any, shipped: Any, ease_lambda: float
) -> dict[str, Any]:
    """Per-user NDCG@10 of the shipped model (already fitted on ``train``) minus full EASE
    (λ = the best on test) on the same test users: mean, standard error, paired bootstrap
    95% interval."""
    from training.metrics import paired_difference, per_user_ndcg
    from training.models import make_model

    users = np.flatnonzero(np.diff(sp.csr_matrix(test.matrix).indptr) > 0)
    log(f"paired test: refitting ease λ={ease_lambda:g} for per-user NDCG")
    ease = make_model("ease", **{"lambda": ease_lambda}).fit(train, dataset)
    per = {}
    for name, model in (("shipped", shipped), ("ease", ease)):
        ids, _ = model.recommend(users, train.matrix[users], N=10)
        per[name] = per_user_ndcg(ids, test.matrix[users], 10)
    return {"ease_lambda": ease_lambda, **paired_difference(per["shipped"], per["ease"])}


def demo_cold_start(users: int, items: int) -> dict[str, Any]:
    from training.data import load_dataset
    from training.demo_data import generate
    from training.evaluation import evaluate_cold_start

    out = BENCH_OUT / f"quality-demo-{users}x{items}"
    if not (out / "interactions.csv").exists():
        generate(out, users=users, items=items, seed=7, fmt="csv")
    dataset = load_dataset(out)
    notes: list[str] = []
    rows = evaluate_cold_start(dataset, 0.2, seed=42, k=10, progress=log, notes=notes)
    best = max(rows["lightfm"]["ndcg"], rows["region_popularity"]["ndcg"])
    ratio = best / rows["popularity"]["ndcg"]
    return {"users": users, "items": items, "rows": rows, "ratio": ratio, "met": ratio >= 1.10}


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = doc["movielens"]["models"]
    names = list(rows)
    values = [rows[n]["ndcg"] for n in names]
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    a.barh(
        names, values, color=["tab:red" if n.startswith("ease λ") else "tab:blue" for n in names]
    )
    a.set_xlabel("NDCG@10 (ml-latest-small, random 80/20, seed 42)")
    a.axvline(doc["movielens"]["target"]["best_ease_ndcg"], color="k", ls="--", lw=1)
    cold = doc["demo_cold_start"]["rows"]
    b.bar(list(cold), [cold[n]["ndcg"] for n in cold], color="tab:green")
    b.set_ylabel("NDCG@10, held-out users (demo data)")
    b.set_title("cold start: features only")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer models, small demo data")
    parser.add_argument("--tune-budget", type=float, default=600.0, metavar="S")
    parser.add_argument("--tune-trials", type=int, default=12)
    ns = parser.parse_args(argv)
    BENCH_OUT.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    doc: dict[str, Any] = {
        "command": "python -m tests.benchmarks.bench_quality " + " ".join(argv or [])
    }
    doc["movielens"] = movielens(ns.quick, ns.tune_budget, ns.tune_trials)
    users, items = (1000, 300) if ns.quick else (5000, 2000)
    doc["demo_cold_start"] = demo_cold_start(users, items)
    doc["seconds"] = round(time.perf_counter() - start, 1)
    (BENCH_OUT / "quality.json").write_text(json.dumps(doc, indent=2, default=str))
    plot(doc, BENCH_OUT / "quality.png")
    t = doc["movielens"]["target"]
    c = doc["demo_cold_start"]
    print(
        f"MovieLens: shipped ({t['shipped']}) NDCG@10 {t['shipped_ndcg']:.4f} vs {t['best_ease']} "
        f"{t['best_ease_ndcg']:.4f} = {t['ratio']:.3f}x (target >= 1.0: "
        f"{'met' if t['met'] else 'MISSED'})"
    )
    paired = doc["movielens"].get("paired_vs_best_ease")
    if paired:
        print(
            f"paired per-user NDCG@10, shipped - ease λ={paired['ease_lambda']:g}: "
            f"{paired['mean']:+.4f} (se {paired['se']:.4f}, bootstrap 95% "
            f"[{paired['ci_low']:+.4f}, {paired['ci_high']:+.4f}], better for "
            f"{paired['better']} / worse for {paired['worse']} of {paired['users']} users)"
        )
    print(
        f"demo cold start: best features-only / global popularity NDCG@10 = {c['ratio']:.3f}x "
        f"(target >= 1.10: {'met' if c['met'] else 'MISSED'})"
    )
    print(f"wrote {BENCH_OUT / 'quality.json'} and quality.png in {doc['seconds']}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
