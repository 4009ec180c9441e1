"""Validation-only sweep: blend of ease-lowrank and ALS scores (Nov 2026 round).

On the 3 folds ``train`` uses (``training.tuning.validation_folds(train, 3, 42)`` of the
MovieLens training 80%, split random:0.2 seed 42) fit ease-lowrank (given params) and ALS
(given params) on each fold's fit matrix, normalize each model's scores by one global
scale per model and fold (``top10``: the mean over validation users of their mean top-10
unseen score; ``std``: the std of all scores), and score the blend
``w * s_ease / c_ease + (1 - w) * s_als / c_als`` for every w. A global scale keeps the
blend an inner product of concatenated embeddings (servable through FAISS). The test 20%
is never scored here.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python docs/benchmarks/quality-sweeps/blend-2026-11/sweep_blend.py OUT.jsonl [ALS_JSON] [EASE_JSON] [LINEAR_REG_SCALE]
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, "/work/main")
from tests.benchmarks.bench_quality import movielens_dataset  # noqa: E402
from training.data import build_matrix  # noqa: E402
from training.evaluation import split_interactions  # noqa: E402
from training.metrics import ranking_metrics  # noqa: E402
from training.models.als import ALSModel  # noqa: E402
from training.models.base import top_n  # noqa: E402
from training.models.ease import EASELowRankModel  # noqa: E402
from training.tuning import validation_folds  # noqa: E402

WEIGHTS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
out_path = sys.argv[1]
als_params = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
ease_params = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
# linear ALS user vectors: x_u @ Y (Y^T Y + LINEAR_REG_SCALE * reg I)^-1 (0: ALS's own
# user factors). A linear user map folds in exactly at serving, like ease-lowrank's.
linear_scale = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0

ds = movielens_dataset(Path("/work/shared/data/ml-latest-small/ratings.csv"))
tr, _te = split_interactions(ds.interactions, "random:0.2", 42)
train = build_matrix(ds, tr)
folds = validation_folds(train, 3, 42)


def ndcg(fit: sp.csr_matrix, held: sp.csr_matrix, s: np.ndarray) -> float:
    ids, _ = top_n(s.astype(np.float32), 10)
    return ranking_metrics(ids, held, 10, n_items=fit.shape[1]).ndcg


res: dict[tuple[str, float], list[float]] = {}
t0 = time.perf_counter()
for fit_m, held in folds:
    held = held.tocsr()
    users = np.flatnonzero(np.diff(held.indptr) > 0)
    fit = fit_m.matrix.tocsr()[users]
    held_u = held[users]
    ease = EASELowRankModel(**{**ease_params, "random_state": 42}).fit(fit_m)
    als = ALSModel(**{**als_params, "random_state": 42}).fit(fit_m)
    scores = {
        "ease": ease.score_users(users, fit).astype(np.float64),
        "als": als.score_users(users, fit).astype(np.float64),
    }
    if linear_scale > 0:
        y = als.item_factors.astype(np.float64)
        reg = linear_scale * float(als.params["regularization"])
        proj = y @ np.linalg.inv(y.T @ y + reg * np.eye(y.shape[1]))
        scores["als"] = np.asarray(fit @ proj) @ y.T
    r, c = fit.nonzero()
    for norm in ("top10", "std"):
        scale = {}
        for name, s in scores.items():
            if norm == "top10":
                masked = s.copy()
                masked[r, c] = -np.inf
                _, top = top_n(masked.astype(np.float32), 10)
                scale[name] = float(np.mean(top))
            else:
                scale[name] = float(np.std(s))
        for w in WEIGHTS:
            blend = w * scores["ease"] / scale["ease"] + (1 - w) * scores["als"] / scale["als"]
            blend[r, c] = -np.inf
            res.setdefault((norm, w), []).append(ndcg(fit, held_u, blend))
    print(f"fold done {time.perf_counter() - t0:.0f}s scales {scale}", flush=True)

base = np.asarray(res[("top10", 1.0)])
with open(out_path, "a") as out:
    for (norm, w), vals in res.items():
        diff = np.asarray(vals) - base
        se = float(diff.std(ddof=1) / np.sqrt(diff.size))
        row = {
            "als": als_params, "ease": ease_params, "als_linear_reg_scale": linear_scale, "norm": norm, "w_ease": w,
            "folds": [round(v, 5) for v in vals], "mean": round(float(np.mean(vals)), 5),
            "gain_vs_ease": round(float(diff.mean()), 5), "gain_se": round(se, 5),
        }
        out.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
