"""Plain EASE (or ease-lowrank at user weight argv[2]) over a lambda grid: mean validation
NDCG@10 on 3 and 5 folds of random training cells ("cell") and of per-user 20% holdouts
("user"), and, as a diagnostic only, NDCG@10 / Recall@20 on the test split. Run from the
repository root: python docs/benchmarks/.../lam.py movielens [0.5]."""
import sys, time, json
from dataclasses import replace
import numpy as np, scipy.sparse as sp
sys.path.insert(0, '.')
from tests.benchmarks.bench_quality import load, per_user_split, per_user_scores, plain_ease
from training.data import build_matrix, InteractionMatrix
from training.tuning import validation_folds
from training.metrics import evaluate_scores
from training.models.ease import EASELowRankModel

name = sys.argv[1]
seed = 42
ds = load(name)
tr, te = per_user_split(ds.interactions, 0.2, seed)
tds = replace(ds, interactions=tr)
train = build_matrix(tds)
test = build_matrix(ds, te, user_ids=train.user_ids, item_ids=train.item_ids)
n_items = len(train.item_ids)

def peruser_folds(m, folds, seed):
    x = sp.csr_matrix(m.matrix)
    coo = x.tocoo()
    rng = np.random.default_rng(seed)
    key = rng.random(coo.nnz)
    # per user: shuffle, assign part = rank*5//n
    order = np.lexsort((key, coo.row))
    rows = coo.row[order]
    counts = np.bincount(rows, minlength=x.shape[0])
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(coo.nnz) - starts[rows]
    n = counts[rows]
    off = rng.integers(0, 5, x.shape[0])[rows]
    part = np.empty(coo.nnz, int)
    part[order] = ((rank * 5) // np.maximum(n, 1) + off) % 5
    out = []
    for f in range(folds):
        held = part == f
        cells = [sp.csr_matrix((coo.data[mm], (coo.row[mm], coo.col[mm])), shape=coo.shape, dtype=np.float32) for mm in (~held, held)]
        out.append((InteractionMatrix(m.user_ids, m.item_ids, cells[0]), cells[1]))
    return out

lams = [25*2**(i/2) for i in range(0, 13)]
uw = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
def mk(l):
    return EASELowRankModel(**{"lambda": l, "user_weight": uw, "dropout": 0.0, "rank": n_items, "random_state": seed})
res = {}
t0 = time.time()
cell = validation_folds(train, 5, seed)
pu = peruser_folds(train, 5, seed)
for l in lams:
    r = {}
    for tag, splits in (("cell", cell), ("user", pu)):
        v = []
        for fit, held in splits:
            m = mk(l).fit(fit, tds)
            v.append(evaluate_scores(m, fit.matrix, held, 10, 20000, seed).ndcg)
        r[tag] = v
    m = mk(l).fit(train, tds)
    s = per_user_scores(m, train.matrix, test.matrix)
    r["test_ndcg"] = float(s["ndcg"].mean()); r["test_recall"] = float(s["recall"].mean())
    res[l] = r
    print(f"{l:8.1f} cell3 {np.mean(r['cell'][:3]):.4f} cell5 {np.mean(r['cell']):.4f} user3 {np.mean(r['user'][:3]):.4f} user5 {np.mean(r['user']):.4f} test {r['test_ndcg']:.4f} {r['test_recall']:.4f}  t={time.time()-t0:.0f}", flush=True)
json.dump({str(k): v for k, v in res.items()}, open(f"var/exp/lam-{name}-uw{uw}.json", "w"))
