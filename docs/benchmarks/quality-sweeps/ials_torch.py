"""Rendle-style iALS (frequency-scaled reg, unobserved weight a0) on GPU: val/test NDCG@10."""
import itertools, json, os, sys, time
import numpy as np, scipy.sparse as sp, torch
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sweep
OUT = os.environ.get("OUT", "/tmp/ials-out")
dev = "cuda"

def solve_side(x, other, a0, lam, nu, chunk=4096):
    """x: csr [n, m] binary (torch indices), other: [m, d]. Returns [n, d]."""
    n, m = x.shape; d = other.shape[1]
    rows = torch.as_tensor(np.repeat(np.arange(n), np.diff(x.indptr)), device=dev)
    cols = torch.as_tensor(x.indices.astype(np.int64), device=dev)
    A = (a0 * (other.T @ other)).expand(n, d, d).clone()
    counts = torch.as_tensor(np.diff(x.indptr), device=dev, dtype=other.dtype)
    reg = lam * (counts + a0 * m) ** nu
    A += reg[:, None, None] * torch.eye(d, device=dev, dtype=other.dtype)
    b = torch.zeros(n, d, device=dev, dtype=other.dtype)
    b.index_add_(0, rows, other[cols])
    for s in range(0, cols.numel(), chunk):
        h = other[cols[s:s + chunk]]
        A.index_add_(0, rows[s:s + chunk], h[:, :, None] * h[:, None, :])
    L = torch.linalg.cholesky(A)
    return torch.cholesky_solve(b[:, :, None], L)[:, :, 0]

def fit(x, d, a0, lam, nu, iters, seed=42):
    g = torch.Generator(device=dev).manual_seed(seed)
    n, m = x.shape
    W = torch.randn(n, d, device=dev, generator=g, dtype=torch.float64) * (0.1 / d ** 0.5)
    H = torch.randn(m, d, device=dev, generator=g, dtype=torch.float64) * (0.1 / d ** 0.5)
    xt = sp.csr_matrix(x.T)
    for _ in range(iters):
        W = solve_side(x, H, a0, lam, nu)
        H = solve_side(xt, W, a0, lam, nu)
    return W.float().cpu().numpy(), H.float().cpu().numpy()

if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    grid = json.loads(sys.argv[1])
    sweep.init(); G = sweep.G
    keys = list(grid); res = []
    for v in itertools.product(*grid.values()):
        cfg = dict(zip(keys, v)); t = time.time()
        uf, itf = fit(G["vtr"], cfg["d"], cfg["a0"], cfg["lam"], cfg["nu"], cfg["it"])
        val = sweep.evaluate(uf, itf, G["vtr"], G["vte"])
        uf, itf = fit(G["tr"], cfg["d"], cfg["a0"], cfg["lam"], cfg["nu"], cfg["it"])
        test = sweep.evaluate(uf, itf, G["tr"], G["te"])
        r = {**cfg, "val": val, "test": test, "s": time.time() - t}; res.append(r)
        print(json.dumps(r), flush=True)
        with open(os.path.join(OUT, "ials.jsonl"), "a") as f: f.write(json.dumps(r) + "\n")
    res.sort(key=lambda r: -r["val"])
    print("BEST"); [print(json.dumps(r)) for r in res[:10]]
