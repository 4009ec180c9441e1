"""Lambda optimum vs data size inside the training part: each fold fit thinned to 50/70/100%
of its cells. Flawed as a design (the thinned-out cells are neither input nor filtered, so
they count as misses); kept because the doc cites it. Validation only."""
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
ds = load(name)
tr, te = per_user_split(ds.interactions, 0.2, seed)
tds = replace(ds, interactions=tr)
train = build_matrix(tds)
n_items = len(train.item_ids)
lams = [25*2**(i/2) for i in range(0, 13)]
splits = validation_folds(train, 5, seed)
fracs = [0.5, 0.7, 1.0]
res = {f: {l: [] for l in lams} for f in fracs}
rng = np.random.default_rng(7)
t0=time.time()
for fit, held in splits:
    coo = sp.coo_matrix(fit.matrix)
    u = rng.random(coo.nnz)
    for f in fracs:
        keep = u < f
        x = sp.csr_matrix((coo.data[keep], (coo.row[keep], coo.col[keep])), shape=coo.shape, dtype=np.float32)
        m0 = InteractionMatrix(fit.user_ids, fit.item_ids, x)
        for l in lams:
            m = EASELowRankModel(**{"lambda": l, "user_weight": uw, "dropout": 0.0, "rank": n_items, "random_state": seed}).fit(m0, tds)
            res[f][l].append(evaluate_scores(m, x, held, 10, 20000, seed).ndcg)
    print("fold done", time.time()-t0, flush=True)
for f in fracs:
    means = {l: np.mean(v) for l, v in res[f].items()}
    best = max(means, key=means.get)
    print(f, f"best {best:.0f}", " ".join(f"{l:.0f}:{means[l]:.4f}" for l in lams))
json.dump({str(f): {str(l): v for l, v in r.items()} for f, r in res.items()}, open(f"var/exp/frac-{name}-uw{uw}.json","w"))
