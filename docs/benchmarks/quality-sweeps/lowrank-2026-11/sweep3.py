"""Validation-only sweep v2: (lambda, dropout) x relaxed-diagonal bound xi x rank."""
import json, sys, time
import numpy as np, scipy.linalg as sl, scipy.sparse as sp
sys.path.insert(0, "/work/main")
from pathlib import Path
from tests.benchmarks.bench_quality import movielens_dataset
from training.data import build_matrix
from training.evaluation import split_interactions
from training.tuning import validation_folds
from training.metrics import ranking_metrics
from training.models.base import top_n

ds = movielens_dataset(Path("/work/shared/data/ml-latest-small/ratings.csv"))
tr, te = split_interactions(ds.interactions, "random:0.2", 42)
train = build_matrix(ds, tr)
folds = validation_folds(train, 3, 42)

def factors(x, lam, p):
    gdiag = np.asarray(x.multiply(x).sum(axis=0)).ravel()
    reg = lam + p / (1 - p) * gdiag
    xs = x @ sp.diags(1 / reg)
    k = (xs @ x.T).toarray(); k[np.diag_indices(k.shape[0])] += 1
    l = np.linalg.cholesky(k)
    z = sl.solve_triangular(l, xs.toarray(), lower=True).T
    d = 1 / reg - (z * z).sum(1)
    return z, d, reg

def ndcg(fit, held, uvec, items):
    users = np.flatnonzero(np.diff(held.indptr) > 0)
    s = uvec[users] @ items.T
    r, c = fit[users].nonzero(); s[r, c] = -np.inf
    ids, _ = top_n(s.astype(np.float32), 10)
    return ranking_metrics(ids, held[users], 10, n_items=fit.shape[1]).ndcg

pairs = [tuple(float(v) for v in s.split(":")) for s in sys.argv[1].split(",")]
alphas = [float(v) for v in sys.argv[5].split(",")]
xis = [float(v) for v in sys.argv[2].split(",")]
ranks = [int(v) for v in sys.argv[3].split(",")]
out = open(sys.argv[4], "a")
for (lam, p), alpha in [(pp, a) for pp in pairs for a in alphas]:
    res = {}
    t0 = time.perf_counter()
    for fit_m, held in folds:
        fit = sp.csr_matrix(fit_m.matrix, dtype=np.float64); fit.data[:] = 1
        nu = np.asarray(fit.sum(axis=1)).ravel(); sw = (nu.mean() / np.maximum(nu, 1)) ** (alpha / 2)
        fitw = sp.csr_matrix(sp.diags(sw) @ fit)
        held = held.tocsr()
        z, d, reg = factors(fitw, lam, p)
        uz = np.asarray(fit @ z)
        q1, r1 = np.linalg.qr(z)
        for xi in xis:
            w = np.maximum(reg, (1 - xi) / d)
            zw = z * w[:, None]
            for r in ranks:
                if r >= z.shape[1]:
                    v = ndcg(fit, held, uz, zw)
                else:
                    q2, r2 = np.linalg.qr(zw)
                    cu, cs, cvt = np.linalg.svd(r1 @ r2.T)
                    left = q1 @ (cu[:, :r] * cs[:r]); right = q2 @ cvt[:r].T
                    v = ndcg(fit, held, np.asarray(fit @ left), right)
                res.setdefault((xi, r), []).append(v)
    for (xi, r), vals in res.items():
        out.write(json.dumps({"lambda": lam, "p": p, "alpha": alpha, "xi": xi, "rank": r, "folds": [round(v, 5) for v in vals], "mean": round(float(np.mean(vals)), 5)}) + "\n")
    out.flush()
    best = max(res.items(), key=lambda kv: np.mean(kv[1]))
    print(f"lam={lam} p={p} alpha={alpha} {time.perf_counter()-t0:.0f}s best xi,r={best[0]} {np.mean(best[1]):.4f}", flush=True)
