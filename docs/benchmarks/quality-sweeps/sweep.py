"""ALS sweep on ml-latest-small: val (from train 80%) and test NDCG@10 per config."""
import itertools, json, os, sys, time
from multiprocessing import Pool
import numpy as np, scipy.sparse as sp
sys.path.insert(0, os.getcwd())
from training.metrics import ranking_metrics
from training.models.base import top_n
from training.models.als import weight_interactions

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.environ.get("OUT", "/tmp/sweep-out")

def load():
    a = np.loadtxt(os.path.join(HERE, "ratings.csv"), delimiter=",", skiprows=1)
    u = np.unique(a[:, 0], return_inverse=True)[1]; i = np.unique(a[:, 1], return_inverse=True)[1]
    return u, i, int(u.max()) + 1, int(i.max()) + 1

def split(u, i, nu, ni, frac, seed):
    rng = np.random.default_rng(seed); perm = rng.permutation(u.size)
    nt = int(round(frac * u.size)); test = np.zeros(u.size, bool); test[perm[:nt]] = True
    mk = lambda m: sp.csr_matrix((np.ones(m.sum(), np.float32), (u[m], i[m])), shape=(nu, ni))
    return mk(~test), mk(test), ~test

def evaluate(uf, itf, train, test, k=10):
    users = np.flatnonzero(np.diff(test.indptr) > 0)
    s = uf[users] @ itf.T
    r, c = train[users].nonzero(); s[r, c] = -np.inf
    ids, _ = top_n(s.astype(np.float32), k)
    return ranking_metrics(ids, test[users], k).ndcg

def weigh(x, w, k1, b):
    if w == "bm25u":  # users as documents
        return weight_interactions(sp.csr_matrix(x.T), "bm25", k1, b).T.tocsr()
    return weight_interactions(x, w, k1, b)

def fit(x, cfg):
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits
    m = AlternatingLeastSquares(factors=cfg["factors"], regularization=cfg["reg"], alpha=cfg["alpha"],
        iterations=cfg["iters"], random_state=42, num_threads=1, use_cg=cfg.get("cg", True))
    with threadpool_limits(1, "blas"):
        m.fit(weigh(x, cfg["w"], cfg.get("k1", 100), cfg.get("b", 0.8)).astype(np.float32), show_progress=False)
    return np.asarray(m.user_factors), np.asarray(m.item_factors)

G = {}
def init():
    u, i, nu, ni = load()
    tr, te, trmask = split(u, i, nu, ni, 0.2, 42)
    # validation carved from the training 80% only
    ut, it = u[trmask], i[trmask]
    vtr, vte, _ = split(ut, it, nu, ni, 0.2, 7)
    G.update(tr=tr, te=te, vtr=vtr, vte=vte)

def job(cfg):
    t = time.time()
    uf, itf = fit(G["vtr"], cfg); val = evaluate(uf, itf, G["vtr"], G["vte"])
    uf, itf = fit(G["tr"], cfg); test = evaluate(uf, itf, G["tr"], G["te"])
    return {**cfg, "val": val, "test": test, "s": time.time() - t}

def ease(lam, x, test):
    g = (x.T @ x).toarray().astype(np.float64); g[np.diag_indices_from(g)] += lam
    p = np.linalg.inv(g); b = -p / np.diag(p); b[np.diag_indices_from(b)] = 0
    users = np.flatnonzero(np.diff(test.indptr) > 0)
    s = np.asarray(x[users] @ b); r, c = x[users].nonzero(); s[r, c] = -np.inf
    ids, _ = top_n(s.astype(np.float32), 10)
    return ranking_metrics(ids, test[users], 10).ndcg

if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    grid = json.loads(sys.argv[1]) if len(sys.argv) > 1 else None
    procs = int(os.environ.get("PROCS", "16"))
    init()
    if os.environ.get("EASE"):
        for lam in [100, 200, 300, 400, 500, 750, 1000]:
            print("ease", lam, ease(lam, G["tr"], G["te"]), "val", ease(lam, G["vtr"], G["vte"]), flush=True)
    keys = list(grid)
    cfgs = [dict(zip(keys, v)) for v in itertools.product(*grid.values())]
    print(len(cfgs), "configs", flush=True)
    res = []
    with Pool(procs, initializer=init) as pool:
        for r in pool.imap_unordered(job, cfgs):
            res.append(r)
            with open(os.path.join(OUT, "sweep.jsonl"), "a") as f: f.write(json.dumps(r) + "\n")
    res.sort(key=lambda r: -r["val"])
    for r in res[:25]: print(json.dumps(r))
