"""Validation-only sweep: EDLAE/DLAE via Woodbury on folds of the training 80%."""
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
    """Z (n x m) and column weights for EDLAE (1/diag P) and DLAE (Lambda)."""
    x = sp.csr_matrix(x, dtype=np.float64); x.data[:] = 1
    gdiag = np.asarray(x.multiply(x).sum(axis=0)).ravel()
    reg = lam + p / (1 - p) * gdiag
    xs = x @ sp.diags(1 / reg)
    k = (xs @ x.T).toarray(); k[np.diag_indices(k.shape[0])] += 1
    l = np.linalg.cholesky(k)
    z = sl.solve_triangular(l, xs.toarray(), lower=True).T  # n x m
    d = 1 / reg - (z * z).sum(1)
    return z, 1 / d, reg

def evaluate(fit, held, uvec, items):
    users = np.flatnonzero(np.diff(held.indptr) > 0)
    s = uvec[users] @ items.T
    r, c = fit[users].nonzero(); s[r, c] = -np.inf
    ids, _ = top_n(s.astype(np.float32), 10)
    return ranking_metrics(ids, held[users], 10, n_items=fit.shape[1]).ndcg

lams = [float(v) for v in sys.argv[1].split(",")]
ps = [float(v) for v in sys.argv[2].split(",")]
ranks = [256, 512, 100000]
out = open(sys.argv[3], "a")
for lam in lams:
    for p in ps:
        res = {}
        t0 = time.perf_counter()
        for fit_m, held in folds:
            fit = sp.csr_matrix(fit_m.matrix); fitb = fit.copy(); fitb.data[:] = 1
            z, w_ed, reg = factors(fitb, lam, p)
            u = np.asarray(fitb @ z)
            for variant, w in (("edlae", w_ed),):
                zw = z * w[:, None]
                # exact truncated SVD of z @ zw.T via QR of both sides
                q1, r1 = np.linalg.qr(z); q2, r2 = np.linalg.qr(zw)
                cu, cs, cvt = np.linalg.svd(r1 @ r2.T)
                left = q1 @ (cu * cs)   # n x m  (projection)
                right = q2 @ cvt.T      # n x m  (items)
                for r in ranks:
                    rr = min(r, left.shape[1])
                    uv = np.asarray(fitb @ left[:, :rr])
                    res.setdefault((variant, r), []).append(evaluate(fit, held.tocsr(), uv, right[:, :rr]))
        for (variant, r), vals in res.items():
            row = {"lambda": lam, "p": p, "variant": variant, "rank": r, "folds": [round(v, 5) for v in vals], "mean": round(float(np.mean(vals)), 5)}
            out.write(json.dumps(row) + "\n"); out.flush()
        best = max(res.items(), key=lambda kv: np.mean(kv[1]))
        print(f"lam={lam} p={p} {time.perf_counter()-t0:.0f}s best {best[0]} {np.mean(best[1]):.4f}", flush=True)
