"""Quality benchmark: the model ``train`` ships vs EASE and the baselines on two real data
sets, and cold start from profile features that do not leak.

Warm, for each data set (MovieLens ml-latest-small ratings, every rating weight 1; Last.fm
hetrec-2k user_artists, weight = play count):

- a seeded random 80/20 split *per user* (each user with 2+ items keeps 80% of them for
  training, 20% are held out; users with one item only train);
- on the 80% the real selection of ``recsvc train`` runs (``training.pipeline.fit_shipped``:
  ALS search, ALS vs ease-lowrank vs ease-als on validation folds of the 80% only), and the
  shipped model is fitted on the 80%;
- on the 20%, NDCG@10 and Recall@20 of: shipped; EASE with λ chosen on the same validation
  folds (plain EASE = ease-lowrank at user weight 0, dropout 0, full rank: exact EASE for
  ranking); EASE at that λ scaled by 1/0.8 (folds see 80% of the training cells:
  informational); EASE with λ picked on the test split (oracle, per metric, over a λ grid);
  tuned ALS; popularity; paired per-user bootstrap 95% CI of shipped minus each.

Target: shipped ≥ 1.00× EASE-with-test-λ on both data sets for both metrics (the floor:
≥ EASE-with-validation-λ).

Cold start, for each real data set: 20% of users (with 4+ items) are held out whole. Every
user's items are cut in two by time (earliest half; ties, e.g. Last.fm's missing
timestamps, broken at random): the *profile half* only derives noisy profile columns
(taste cluster of the profile half's items, activity bucket, mainstream bucket, and one
pure-noise column); a held-out user is scored on the *later half* only, so the items that
made a profile are never its answers. ``train``'s own choice (``cold_start_source``:
held-out users of the training part) is compared with every source on those users. Plus
the demo generator (region, age bucket, gender: weak features) via
``training.evaluation.evaluate_cold_start``.

    .venv/bin/python -m tests.benchmarks.bench_quality [--datasets movielens,lastfm]
        [--skip-cold] [--skip-warm] [--seed 42] [--tune-budget S] [--quick]

Writes ``$BENCH_OUT/quality/quality.json`` (merged per data set, so runs can be split) and
``quality.png``; the write-up is docs/benchmarks/quality.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("SHARED_DATA", REPO.parent / "shared" / "data"))
BENCH_OUT = Path(os.environ.get("BENCH_OUT", REPO / "var" / "bench"))
DATASETS = ("movielens", "lastfm")
# Oracle grid: coarse (x2) over two decades, then x sqrt(2) around the best.
ORACLE_LAMBDAS = (12.5, 25.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1600.0)
K_NDCG, K_RECALL = 10, 20
TEST_FRACTION = 0.2


def log(message: str) -> None:
    print(f"[quality {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- data --------------------------------------------------------------------------------


def load(name: str) -> Any:
    from training.data import dataset_from_frames

    if name == "movielens":
        raw = pd.read_csv(SHARED_DATA / "ml-latest-small" / "ratings.csv")
        frame = pd.DataFrame(
            {
                "user_id": raw["userId"].astype(str),
                "item_id": raw["movieId"].astype(str),
                "timestamp": raw["timestamp"].astype("int64"),
                "event_type": "rating",
            }
        )
    elif name == "lastfm":
        raw = pd.read_csv(SHARED_DATA / "hetrec-lastfm-2k" / "user_artists.dat", sep="\t")
        frame = pd.DataFrame(
            {
                "user_id": raw["userID"].astype(str),
                "item_id": raw["artistID"].astype(str),
                "timestamp": np.zeros(len(raw), dtype="int64"),  # the file has none
                "event_type": "play",
                "weight": raw["weight"].astype("float64"),  # play count
            }
        )
        return dataset_from_frames(frame, event_weights={"play": 1.0})
    else:
        raise SystemExit(f"unknown data set {name!r} (expected one of {', '.join(DATASETS)})")
    return dataset_from_frames(frame)


def per_user_split(
    interactions: pd.DataFrame, fraction: float, seed: int, by_time: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(kept, held) rows: ``round(fraction * n_u)`` of each user's rows held out, at random
    (``by_time``: the latest, ties at random). Users with one row keep it."""
    rng = np.random.default_rng(seed)
    frame = interactions.reset_index(drop=True)
    key = rng.random(len(frame))
    order_cols = ["user_id", "timestamp", "_key"] if by_time else ["user_id", "_key"]
    ordered = frame.assign(_key=key).sort_values(order_cols, kind="stable")
    rank = ordered.groupby("user_id", sort=False, observed=True).cumcount().to_numpy()
    size = ordered.groupby("user_id", sort=False, observed=True)["_key"].transform("size")
    n_held = np.round(fraction * size.to_numpy()).astype(np.int64)
    n_held = np.where(size.to_numpy() > 1, n_held, 0)
    # random: the first n_held of the shuffled order; by time: the last n_held
    held_sorted = rank < n_held if not by_time else rank >= size.to_numpy() - n_held
    held = np.zeros(len(frame), dtype=bool)
    held[ordered.index.to_numpy()] = held_sorted
    return frame[~held], frame[held]


# --- warm ---------------------------------------------------------------------------------


def per_user_scores(model: Any, train: sp.csr_matrix, test: sp.csr_matrix) -> dict[str, Any]:
    """Per-user NDCG@10 and Recall@20 of a fitted model (users with held-out items)."""
    from training.metrics import per_user_ndcg, per_user_recall

    users = np.flatnonzero(np.diff(sp.csr_matrix(test).indptr) > 0)
    ids, _ = model.recommend(users, train[users], N=K_RECALL, filter_already_liked_items=True)
    return {
        "ndcg": per_user_ndcg(ids, test[users], K_NDCG),
        "recall": per_user_recall(ids, test[users], K_RECALL),
    }


def plain_ease(lam: float, n_items: int, seed: int) -> Any:
    """Plain EASE as ease-lowrank at user weight 0, dropout 0 and full rank: exact for
    ranking (the diagonal only scores seen items) and fast when users < items."""
    from training.models.ease import EASELowRankModel

    return EASELowRankModel(
        **{"lambda": lam, "user_weight": 0.0, "dropout": 0.0, "rank": n_items, "random_state": seed}
    )


def warm(name: str, seed: int, tune_budget: float | None) -> dict[str, Any]:
    from training.config import TrainConfig
    from training.data import build_matrix
    from training.metrics import paired_difference
    from training.models import make_model
    from training.pipeline import _fit_implicit, fit_shipped, model_params
    from training.stages import StageLog

    dataset = load(name)
    train_rows, test_rows = per_user_split(dataset.interactions, TEST_FRACTION, seed)
    train_ds = replace(dataset, interactions=train_rows)
    train = build_matrix(train_ds)
    test = build_matrix(dataset, test_rows, user_ids=train.user_ids, item_ids=train.item_ids)
    n_items = len(train.item_ids)
    log(
        f"{name}: {len(train.user_ids)} users, {n_items} items, "
        f"{train.matrix.nnz} train / {test.matrix.nnz} test pairs"
    )
    config = TrainConfig(seed=seed)
    if tune_budget:
        config = TrainConfig(seed=seed, tune_budget_s=tune_budget)
    t0 = time.perf_counter()
    fitted = fit_shipped(train_ds, train, config, StageLog(prefix=f"quality {name} train"))
    select_s = time.perf_counter() - t0
    log(f"{name}: shipped {fitted.model.name} after {select_s:.0f}s: {fitted.reason}")
    x, y = train.matrix, test.matrix
    per: dict[str, dict[str, Any]] = {"shipped": per_user_scores(fitted.model, x, y)}
    info: dict[str, dict[str, Any]] = {
        "shipped": {"model": fitted.model.name, "params": _plain(fitted.model.params)}
    }
    selection = fitted.selection or {}
    val_lambda = (selection.get("ease") or {}).get("lambda")
    if val_lambda is not None:
        for label, lam in (("ease_val", val_lambda), ("ease_val_scaled", val_lambda / 0.8)):
            log(f"{name}: {label} λ={lam:g}")
            model = plain_ease(float(lam), n_items, seed).fit(train, train_ds)
            per[label] = per_user_scores(model, x, y)
            info[label] = {"lambda": float(lam)}
    oracle: dict[float, dict[str, Any]] = {}

    def at(lam: float) -> dict[str, Any]:
        lam = round(lam, 3)
        if lam not in oracle:
            model = plain_ease(lam, n_items, seed).fit(train, train_ds)
            oracle[lam] = per_user_scores(model, x, y)
            log(
                f"{name}: oracle ease λ={lam:g} ndcg@10 {oracle[lam]['ndcg'].mean():.4f} "
                f"recall@20 {oracle[lam]['recall'].mean():.4f}"
            )
        return oracle[lam]

    for lam in ORACLE_LAMBDAS:
        at(lam)
    for metric in ("ndcg", "recall"):
        best = max(oracle, key=lambda lam: oracle[lam][metric].mean())
        for lam in (best / np.sqrt(2.0), best * np.sqrt(2.0)):
            at(float(lam))
        best = max(oracle, key=lambda lam: oracle[lam][metric].mean())
        per[f"ease_test_{metric}"] = oracle[best]
        info[f"ease_test_{metric}"] = {"lambda": best, "picked_by": f"test {metric}"}
    tuning = fitted.tuning or {}
    als_params = model_params(config, tuning.get("best_params"))
    log(f"{name}: tuned ALS {als_params}")
    als = _fit_implicit("als", als_params, train, train_ds)
    per["als_tuned"] = per_user_scores(als, x, y)
    info["als_tuned"] = {"params": _plain(als_params)}
    pop = make_model("popularity").fit(train, train_ds)
    per["popularity"] = per_user_scores(pop, x, y)
    rows: dict[str, dict[str, Any]] = {}
    for label, values in per.items():
        rows[label] = {
            f"ndcg@{K_NDCG}": round(float(values["ndcg"].mean()), 5),
            f"recall@{K_RECALL}": round(float(values["recall"].mean()), 5),
            **info.get(label, {}),
        }
        if label != "shipped":
            rows[label]["shipped_minus"] = {
                metric: _rounded(paired_difference(per["shipped"][metric], values[metric]))
                for metric in ("ndcg", "recall")
            }
    targets = {}
    for metric, key in (("ndcg", f"ndcg@{K_NDCG}"), ("recall", f"recall@{K_RECALL}")):
        shipped = rows["shipped"][key]
        oracle_value = rows[f"ease_test_{metric}"][key]
        floor = rows.get("ease_val", {}).get(key)
        targets[key] = {
            "shipped": shipped,
            "ease_test_lambda": oracle_value,
            "ratio_vs_test_lambda": round(shipped / oracle_value, 4),
            "met": shipped >= oracle_value,
            "ease_val_lambda": floor,
            "ratio_vs_val_lambda": None if floor is None else round(shipped / floor, 4),
            "floor_met": None if floor is None else shipped >= floor,
        }
    return {
        "data": {
            "users": len(train.user_ids),
            "items": n_items,
            "train_pairs": int(x.nnz),
            "test_pairs": int(y.nnz),
            "test_users": len(per["shipped"]["ndcg"]),
            "split": f"random {1 - TEST_FRACTION:.0%}/{TEST_FRACTION:.0%} per user, seed {seed}",
        },
        "selection_s": round(select_s, 1),
        "shipped_reason": fitted.reason,
        "selection": selection,
        "tuning_summary": {k: v for k, v in tuning.items() if k != "trials"},
        "oracle_grid": {
            str(lam): {
                f"ndcg@{K_NDCG}": round(float(v["ndcg"].mean()), 5),
                f"recall@{K_RECALL}": round(float(v["recall"].mean()), 5),
            }
            for lam, v in sorted(oracle.items())
        },
        "rows": rows,
        "targets": targets,
    }


# --- cold start -----------------------------------------------------------------------------

PROFILE_NOISE = 0.3  # share of profile values replaced by a random value of the column


def derived_profiles(dataset: Any, profile_rows: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Noisy categorical profile columns from each user's profile half only (module doc)."""
    import scipy.sparse.linalg

    from training.data import build_matrix

    half = build_matrix(dataset, profile_rows)
    users, x = half.user_ids, half.matrix
    rng = np.random.default_rng(seed)
    binary = sp.csr_matrix(x, dtype=np.float64, copy=True)
    binary.data[:] = 1.0
    n = np.asarray(binary.sum(axis=1)).ravel()
    normed = sp.diags(1.0 / np.sqrt(np.maximum(n, 1.0))) @ binary
    u, s, _ = scipy.sparse.linalg.svds(normed, k=16, random_state=seed)
    emb = u * s[None, :]
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    taste = _kmeans(emb, 8, rng)
    pop = np.asarray(binary.sum(axis=0)).ravel()
    mainstream = np.asarray(binary @ np.log1p(pop)).ravel() / np.maximum(n, 1.0)
    columns = {
        "taste": taste,
        "activity": _quantile_bucket(n, 4),
        "mainstream": _quantile_bucket(mainstream, 3),
        "noise": rng.integers(0, 5, len(users)),
    }
    out = {"user_id": users}
    for col, values in columns.items():
        values = np.asarray(values).copy()
        if col != "noise":
            flip = rng.random(len(values)) < PROFILE_NOISE
            values[flip] = rng.integers(0, int(values.max()) + 1, int(flip.sum()))
        out[col] = np.array([f"{col[0]}{v}" for v in values], dtype=object)
    return pd.DataFrame(out)


def _kmeans(points: np.ndarray, k: int, rng: np.random.Generator, rounds: int = 25) -> np.ndarray:
    centres = points[rng.choice(len(points), k, replace=False)]
    labels = np.zeros(len(points), dtype=np.int64)
    for _ in range(rounds):
        labels = np.argmax(points @ centres.T, axis=1)
        for c in range(k):
            members = points[labels == c]
            if len(members):
                centre = members.mean(axis=0)
                centres[c] = centre / max(float(np.linalg.norm(centre)), 1e-12)
    return labels


def _quantile_bucket(values: np.ndarray, buckets: int) -> np.ndarray:
    edges = np.quantile(values, np.linspace(0, 1, buckets + 1)[1:-1])
    return np.searchsorted(edges, values, side="right")


def cold(name: str, seed: int) -> dict[str, Any]:
    from recsvc.bundle.scoring import cold_user_scores, embedding_vector, segment_scores
    from training.cold_start import fit_embedding, segment_columns
    from training.config import TrainConfig
    from training.data import build_matrix, dataset_from_frames
    from training.metrics import paired_difference, per_user_ndcg, per_user_recall
    from training.pipeline import Fitted, _fit_implicit, cold_start_source, model_params
    from training.stages import StageLog

    dataset = load(name)
    inter = dataset.interactions.reset_index(drop=True)
    # the earliest half of each user's items makes the profile; the rest are the answers
    later, profile_half = per_user_split(inter, 0.5, seed, by_time=True)
    profiles = derived_profiles(dataset, profile_half, seed)
    # a user with one item has no profile half: known to the users file, no values
    everyone = np.unique(inter["user_id"].astype(str).to_numpy())
    profiles = profiles.set_index(profiles["user_id"].astype(str)).drop(columns="user_id")
    profiles = profiles.reindex(everyone).fillna("").rename_axis("user_id").reset_index()
    counts = inter.groupby("user_id", observed=True).size()
    eligible = np.sort(counts.index[counts.to_numpy() >= 4].astype(str).to_numpy())
    rng = np.random.default_rng(seed)
    cold_users = set(rng.choice(eligible, round(0.2 * len(eligible)), replace=False))
    is_cold = inter["user_id"].astype(str).isin(cold_users).to_numpy()
    frame = inter[~is_cold][["user_id", "item_id", "timestamp", "event_type", "weight"]]
    frame = frame.astype({"user_id": str, "item_id": str, "event_type": str})
    train_ds = dataset_from_frames(
        frame, users=profiles.astype(str), event_weights={"play": 1.0, "rating": 1.0}
    )
    train = build_matrix(train_ds)
    config = TrainConfig(seed=seed)
    log(f"{name} cold start: {len(cold_users)} held-out users, {len(train.user_ids)} train users")
    # The profile choice uses the shipped model's embeddings (the ``embedding`` source);
    # the default ALS stands in for the full selection here (the warm section runs it).
    als = _fit_implicit("als", model_params(config), train, train_ds)
    assert als.user_factors is not None and als.item_factors is not None
    fitted = Fitted(als, "config", "benchmark: default ALS", None)
    t0 = time.perf_counter()
    choice, hybrid = cold_start_source(
        train_ds, train, config, fitted, StageLog(prefix=f"quality {name} cold")
    )
    choose_s = time.perf_counter() - t0
    log(f"{name} cold start: chose {choice.arrays.source} ({choice.reason})")
    answers = later[later["user_id"].astype(str).isin(cold_users)]
    held = build_matrix(dataset, answers, item_ids=train.item_ids)
    feats = profiles.set_index(profiles["user_id"].astype(str)).drop(columns="user_id")
    feats = feats.reindex(held.user_ids.astype(str)).fillna("")
    rows_in: list[dict[str, str]] = [
        {str(c): str(v) for c, v in r.items() if v} for r in feats.to_dict("records")
    ]
    pop = np.asarray(train.matrix.getnnz(axis=0), dtype=np.float64)
    relevant = held.matrix
    keep = np.diff(sp.csr_matrix(relevant).indptr) > 0
    relevant = relevant[keep]
    rows_in = [r for r, k in zip(rows_in, keep, strict=True) if k]

    def score(scores: np.ndarray) -> dict[str, np.ndarray]:
        top = np.argsort(-scores, axis=1, kind="stable")[:, :K_RECALL]
        return {
            "ndcg": per_user_ndcg(top, relevant, K_NDCG),
            "recall": per_user_recall(top, relevant, K_RECALL),
        }

    per: dict[str, dict[str, np.ndarray]] = {"popularity": score(np.tile(pop, (len(rows_in), 1)))}
    arrays = choice.arrays
    if arrays.source == "segments":
        chosen = np.vstack([segment_scores(arrays, pop, r) for r in rows_in])
    elif arrays.source == "embedding":
        chosen = np.vstack([als.item_factors @ embedding_vector(arrays, r) for r in rows_in])
    elif arrays.source == "lightfm" and hybrid is not None:
        chosen = np.vstack([cold_user_scores(hybrid, r) for r in rows_in])
    else:
        chosen = np.tile(pop, (len(rows_in), 1))
    per[f"chosen ({arrays.source})"] = score(chosen)
    if arrays.source != "embedding" and segment_columns(_profile_table(train_ds, train)):
        active = np.diff(sp.csr_matrix(train.matrix).indptr) > 0
        table = _profile_table(train_ds, train)
        emb = fit_embedding(table, segment_columns(table), als.user_factors, active)
        per["embedding"] = score(
            np.vstack([als.item_factors @ embedding_vector(emb, r) for r in rows_in])
        )
    if hybrid is not None:
        per["lightfm"] = score(np.vstack([cold_user_scores(hybrid, r) for r in rows_in]))
    # every single column as a segment source, at the prior its validation chose
    from training.cold_start import _segment_arrays

    for cand, meta in choice.candidates.items():
        if meta.get("source") == "segments":
            groupings = [tuple(g) for g in meta["groupings"]]
            seg = _segment_arrays(
                train.matrix, _profile_table(train_ds, train), groupings, meta["prior_strength"]
            )
            per[cand] = score(np.vstack([segment_scores(seg, pop, r) for r in rows_in]))
    rows = {}
    for label, values in per.items():
        rows[label] = {
            f"ndcg@{K_NDCG}": round(float(values["ndcg"].mean()), 5),
            f"recall@{K_RECALL}": round(float(values["recall"].mean()), 5),
            "validation_ndcg@10": (choice.candidates.get(label) or {}).get("ndcg"),
        }
        if label != "popularity":
            rows[label]["minus_popularity"] = {
                m: _rounded(paired_difference(values[m], per["popularity"][m]))
                for m in ("ndcg", "recall")
            }
    return {
        "held_out_users": int(relevant.shape[0]),
        "profile_columns": [c for c in profiles.columns if c != "user_id"],
        "choice": choice.to_dict(),
        "choose_s": round(choose_s, 1),
        "rows": rows,
    }


def _profile_table(dataset: Any, matrix: Any) -> pd.DataFrame:
    from training.cold_start import profile_frame

    return profile_frame(dataset, matrix.user_ids)


def demo_cold_start(users: int, items: int, seed: int) -> dict[str, Any]:
    from training.data import load_dataset
    from training.demo_data import generate
    from training.evaluation import evaluate_cold_start

    out = BENCH_OUT / f"quality-demo-{users}x{items}"
    if not (out / "interactions.csv").exists():
        generate(out, users=users, items=items, seed=7, fmt="csv")
    dataset = load_dataset(out)
    rows = evaluate_cold_start(dataset, 0.2, seed=seed, k=10, progress=log)
    return {"users": users, "items": items, "rows": rows}


# --- output -----------------------------------------------------------------------------------


def _rounded(d: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 5) if isinstance(v, float) else v for k, v in d.items()}


def _plain(params: Any) -> Any:
    return json.loads(json.dumps(params, default=lambda v: getattr(v, "item", lambda: str(v))()))


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    warm_sets = [n for n in DATASETS if n in doc.get("warm", {})]
    cold_sets = [n for n in DATASETS if n in doc.get("cold", {})]
    panels = len(warm_sets) + len(cold_sets)
    if panels == 0:
        return
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.5), squeeze=False)
    for ax, name in zip(axes[0], warm_sets, strict=False):
        rows = doc["warm"][name]["rows"]
        labels = list(rows)
        ndcg = [rows[r][f"ndcg@{K_NDCG}"] for r in labels]
        recall = [rows[r][f"recall@{K_RECALL}"] for r in labels]
        pos = np.arange(len(labels))
        ax.barh(pos - 0.2, ndcg, 0.4, label="NDCG@10")
        ax.barh(pos + 0.2, recall, 0.4, label="Recall@20")
        ax.set_yticks(pos, labels)
        ax.invert_yaxis()
        ax.set_title(f"{name}: warm, per-user 80/20")
        ax.legend(loc="lower right")
    for ax, name in zip(axes[0][len(warm_sets) :], cold_sets, strict=False):
        rows = doc["cold"][name]["rows"]
        labels = list(rows)
        ax.barh(labels, [rows[r][f"ndcg@{K_NDCG}"] for r in labels], color="tab:green")
        ax.invert_yaxis()
        ax.set_title(f"{name}: cold start, NDCG@10")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--tune-budget", type=float, default=None, metavar="S")
    parser.add_argument("--skip-warm", action="store_true")
    parser.add_argument("--skip-cold", action="store_true")
    parser.add_argument("--demo", default="2000x300", help="demo data USERSxITEMS (or 'none')")
    parser.add_argument(
        "--quick", action="store_true", help="MovieLens only, 60 s search budgets, no demo"
    )
    ns = parser.parse_args(argv)
    if ns.quick:
        ns.datasets, ns.tune_budget, ns.demo = "movielens", ns.tune_budget or 60.0, "none"
    out = BENCH_OUT / "quality"
    out.mkdir(parents=True, exist_ok=True)
    path = out / "quality.json"
    doc: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    for name in [n for n in ns.datasets.split(",") if n]:
        for part in ("warm", "cold"):
            if (part == "warm" and ns.skip_warm) or (part == "cold" and ns.skip_cold):
                continue
            start = time.perf_counter()
            result = warm(name, ns.seed, ns.tune_budget) if part == "warm" else cold(name, ns.seed)
            result["seconds"] = round(time.perf_counter() - start, 1)
            result["load_average"] = os.getloadavg()
            result["command"] = "python -m tests.benchmarks.bench_quality " + " ".join(
                argv if argv is not None else sys.argv[1:]
            )
            doc.setdefault(part, {})[name] = result
            path.write_text(json.dumps(doc, indent=2, default=str))
            log(f"{name} {part}: written to {path}")
            summarize(part, name, result)
    if ns.demo != "none" and not ns.skip_cold:
        users, items = (int(v) for v in ns.demo.split("x"))
        doc["demo_cold_start"] = demo_cold_start(users, items, ns.seed)
        path.write_text(json.dumps(doc, indent=2, default=str))
    plot(doc, out / "quality.png")
    print(f"wrote {path} and quality.png")
    return 0


def summarize(part: str, name: str, result: dict[str, Any]) -> None:
    if part == "warm":
        for key, t in result["targets"].items():
            print(
                f"{name} {key}: shipped {t['shipped']:.4f} vs EASE test-λ "
                f"{t['ease_test_lambda']:.4f} = {t['ratio_vs_test_lambda']:.4f}x "
                f"({'met' if t['met'] else 'MISSED'}); vs EASE val-λ {t['ease_val_lambda']} "
                f"= {t['ratio_vs_val_lambda']}x"
            )
        for label, row in result["rows"].items():
            print(f"  {label:22s} {row}")
    else:
        for label, row in result["rows"].items():
            print(f"  {name} cold {label:30s} {row}")


if __name__ == "__main__":
    raise SystemExit(main())
