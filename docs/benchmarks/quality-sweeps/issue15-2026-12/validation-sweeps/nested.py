"""Nested check of lambda transfer rules, validation only: sub-folds of each fold choose
lambda (r=0); rules map it to the fold fit; scored on the fold's held-out cells."""
import sys, time, json
from dataclasses import replace
import numpy as np, scipy.sparse as sp
sys.path.insert(0, '.')
from tests.benchmarks.bench_quality import load, per_user_split
from training.data import build_matrix, InteractionMatrix
from training.tuning import validation_folds
from training.metrics import evaluate_scores
from training.models.ease import EASELowRankModel
name = sys.argv[1]; seed = 42
uw = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
nfold = int(sys.argv[3]) if len(sys.argv) > 3 else 3
ds = load(name)
tr, te = per_user_split(ds.interactions, 0.2, seed)
tds = replace(ds, interactions=tr)
train = build_matrix(tds)
n_items = len(train.item_ids)
lams = [float(v) for v in (sys.argv[4].split(",") if len(sys.argv) > 4 else [25*2**(i/2) for i in range(0, 13)])]
q = 0.8
def fit_score(fit, held, lam, p):
    m = EASELowRankModel(**{"lambda": lam, "user_weight": uw, "dropout": p, "rank": n_items, "random_state": seed}).fit(fit, tds)
    return evaluate_scores(m, fit.matrix, held, 10, 20000, seed).ndcg
out = []
t0 = time.time()
for fi, (fit, held) in enumerate(validation_folds(train, nfold, seed)):
    subs = validation_folds(fit, 3, seed + 1 + fi)
    sub_curve = {}
    for lam in lams:
        sub_curve[lam] = float(np.mean([fit_score(f2, h2, lam, 0.0) for f2, h2 in subs]))
    lq = max(sub_curve, key=sub_curve.get)
    rules = {"identity": (lq, 0.0), "x0.8": (lq * q, 0.0), "x1.25": (lq / q, 0.0),
             "match": (lq / q**2, 1 - q), "match_lam_only": (lq / q**2, 0.0), "x0.5": (lq*0.5, 0.0)}
    res = {k: fit_score(fit, held, l, p) for k, (l, p) in rules.items()}
    grid = {lam: fit_score(fit, held, lam, 0.0) for lam in lams}
    best = max(grid, key=grid.get)
    out.append({"fold": fi, "sub_best": lq, "sub_curve": sub_curve, "rules": res, "grid": grid, "fold_best": best})
    print(f"fold {fi}: sub-fold best {lq:.0f}; fold best {best:.0f} {grid[best]:.4f}; " + " ".join(f"{k} {v:.4f}" for k, v in res.items()) + f" t={time.time()-t0:.0f}", flush=True)
json.dump(out, open(f"var/exp/nested-{name}-uw{uw}.json", "w"), default=str)
for k in out[0]["rules"]:
    print(k, np.mean([o["rules"][k] for o in out]))
print("oracle", np.mean([o["grid"][o["fold_best"]] for o in out]))
