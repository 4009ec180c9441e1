"""Validation only: item scores rescaled by popularity**beta (items' factors * pop**beta)."""
import sys, time, json
from dataclasses import replace
import numpy as np
sys.path.insert(0, '.')
from tests.benchmarks.bench_quality import load, per_user_split
from training.data import build_matrix
from training.tuning import validation_folds
from training.metrics import evaluate_scores
from training.models.ease import EASELowRankModel
from training.models.als import ALSModel
from training.models.blend import EASEALSBlendModel
from training.models.linear import binary_rows
from threadpoolctl import threadpool_limits
import implicit.cpu.als
name = sys.argv[1]; seed = 42
ease_p = json.loads(sys.argv[2]); als_p = json.loads(sys.argv[3]); ws = [float(v) for v in sys.argv[4].split(",")]
ds = load(name)
tr, te = per_user_split(ds.interactions, 0.2, seed)
tds = replace(ds, interactions=tr)
train = build_matrix(tds)
B = (-0.3, -0.2, -0.1, -0.05, 0.0, 0.05, 0.1, 0.2)
res = {}
t0 = time.time()
for fit, held in validation_folds(train, 3, seed):
    als = ALSModel(**{**als_p, "random_state": seed})
    with threadpool_limits(1, "blas"):
        als.fit(fit, tds)
    x = binary_rows(fit.matrix)
    pop = np.asarray(x.sum(axis=0)).ravel() + 1.0
    ep = {**ease_p, "random_state": seed}
    ease = EASELowRankModel(**ep).fit(fit, tds)
    base = {"ease_params": ep, "als_params": als_p}
    norm = EASEALSBlendModel(**base, random_state=seed).normalized_parts(ease, als, x=x)
    for w in ws:
        m = EASEALSBlendModel(**base, w_ease=w, random_state=seed).combine(ease, als, x=x, normalized=norm)
        p, it, us = m._fitted()
        for beta in B:
            m._set(p, it * (pop ** beta)[:, None], us)
            res.setdefault((w, beta), []).append(evaluate_scores(m, fit.matrix, held, 10, 20000, seed).ndcg)
            m._set(p, it, us)
    print("fold", time.time() - t0, flush=True)
for w in ws:
    print(f"w {w:g}: " + " ".join(f"b{b}:{np.mean(res[(w, b)]):.4f}" for b in B))
json.dump({f"{k[0]}|{k[1]}": v for k, v in res.items()}, open(f"var/exp/popscale-{name}.json", "w"))
