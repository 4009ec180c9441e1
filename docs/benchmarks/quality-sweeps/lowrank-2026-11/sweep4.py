"""Validation-only sweep v4: EASE-family (lambda, p, xi, user weight alpha) + blend with an
ideal low-pass filter (GF-CF style: top-k right singular vectors of D_u^-1/2 X D_i^-1/2)."""
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

def ndcg_scores(fit, held, s):
    users = np.flatnonzero(np.diff(held.indptr) > 0)
    s = s[users].copy()
    r, c = fit[users].nonzero(); s[r, c] = -np.inf
    ids, _ = top_n(s.astype(np.float32), 10)
    return ranking_metrics(ids, held[users], 10, n_items=fit.shape[1]).ndcg

configs = [tuple(float(v) for v in s.split(":")) for s in sys.argv[1].split(",")]  # lam:p:xi:alpha
ks = [int(v) for v in sys.argv[2].split(",")]
betas = [float(v) for v in sys.argv[3].split(",")]
out = open(sys.argv[4], "a")
for lam, p, xi, alpha in configs:
    res = {}
    t0 = time.perf_counter()
    for fit_m, held in folds:
        fit = sp.csr_matrix(fit_m.matrix, dtype=np.float64); fit.data[:] = 1
        held = held.tocsr()
        nu = np.asarray(fit.sum(axis=1)).ravel()
        sw = (nu.mean() / np.maximum(nu, 1)) ** (alpha / 2)
        z, d, reg = factors(sp.csr_matrix(sp.diags(sw) @ fit), lam, p)
        w = np.maximum(reg, (1 - xi) / d)
        base = np.asarray(fit @ z) @ (z * w[:, None]).T
        # low-pass filter on the normalized matrix (exact SVD via the small users side)
        du = np.maximum(nu, 1) ** -0.5
        di = np.maximum(np.asarray(fit.sum(axis=0)).ravel(), 1) ** -0.5
        rn = (sp.diags(du) @ fit @ sp.diags(di)).toarray()
        _, _, vt = np.linalg.svd(rn, full_matrices=False)
        bn = np.linalg.norm(base) 
        for k in ks:
            v = vt[:k].T  # items x k
            low = np.asarray(fit @ (di[:, None] * v)) @ ((1 / di)[:, None] * v).T
            scale = bn / max(np.linalg.norm(low), 1e-12)
            for beta in betas:
                s = base + beta * scale * low
                res.setdefault((k, beta), []).append(ndcg_scores(fit, held, s))
    for (k, beta), vals in res.items():
        out.write(json.dumps({"lambda": lam, "p": p, "xi": xi, "alpha": alpha, "k": k, "beta": beta, "folds": [round(v, 5) for v in vals], "mean": round(float(np.mean(vals)), 5)}) + "\n")
    out.flush()
    best = max(res.items(), key=lambda kv: np.mean(kv[1]))
    base0 = np.mean(res[(ks[0], 0.0)]) if (ks[0], 0.0) in res else float("nan")
    print(f"lam={lam} p={p} xi={xi} alpha={alpha} {time.perf_counter()-t0:.0f}s base {base0:.4f} best k,beta={best[0]} {np.mean(best[1]):.4f}", flush=True)
