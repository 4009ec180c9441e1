"""Validation only: ease-als with the ease part's lambda re-searched inside the blend."""
import sys, time, json
from dataclasses import replace
import numpy as np
sys.path.insert(0, '.')
from tests.benchmarks.bench_quality import load, per_user_split
from training.data import build_matrix
from training.tuning import validation_folds
from training.metrics import evaluate_scores
from training.models.ease import EASELowRankModel
from training.models.als import ALSModel, ALS_DEFAULTS
from training.models.blend import EASEALSBlendModel
from training.models.linear import binary_rows
from threadpoolctl import threadpool_limits
name = sys.argv[1]; seed = 42
ease_p = json.loads(sys.argv[2]); als_p = json.loads(sys.argv[3])
lams = [float(v) for v in sys.argv[4].split(",")]
ds = load(name)
tr, te = per_user_split(ds.interactions, 0.2, seed)
tds = replace(ds, interactions=tr)
train = build_matrix(tds)
W = (1.0, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3)
res = {}
t0 = time.time()
for fit, held in validation_folds(train, 3, seed):
    als = ALSModel(**{**als_p, "random_state": seed})
    import implicit.cpu.als
    with threadpool_limits(1, "blas"):
        als.fit(fit, tds)
    x = binary_rows(fit.matrix)
    for lam in lams:
        ep = {**ease_p, "lambda": lam, "random_state": seed}
        ease = EASELowRankModel(**ep).fit(fit, tds)
        base = {"ease_params": ep, "als_params": als_p}
        b = EASEALSBlendModel(**base, random_state=seed)
        norm = b.normalized_parts(ease, als, x=x)
        for w in W:
            m = EASEALSBlendModel(**base, w_ease=w, random_state=seed).combine(ease, als, x=x, normalized=norm)
            res.setdefault((lam, w), []).append(evaluate_scores(m, fit.matrix, held, 10, 20000, seed).ndcg)
    print("fold", time.time() - t0, flush=True)
for lam in lams:
    print(f"lam {lam:g}: " + " ".join(f"w{w}:{np.mean(res[(lam, w)]):.4f}" for w in W))
json.dump({f"{k[0]}|{k[1]}": v for k, v in res.items()}, open(f"var/exp/blendlam-{name}.json", "w"))
