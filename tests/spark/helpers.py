"""Small data and comparisons shared by the spark-engine tests."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import scipy.sparse as sp

from recsvc.bundle import Bundle
from training.config import TrainConfig
from training.demo_data import generate
from training.metrics import ranking_metrics

# The same settings for both engines: small and quick, no search, no hybrid.
SETTINGS = {"factors": 32, "iterations": 10, "tune": False, "hybrid": False, "candidates": 50}


def config() -> TrainConfig:
    return TrainConfig(**SETTINGS, lowrank_ease=False)  # type: ignore[arg-type]


def split_storefront(base: Path, users: int = 800, items: int = 200) -> tuple[Path, pd.DataFrame]:
    """A demo storefront with 20% of its interaction rows held out (seed 7): the train
    folder and the held-out rows."""
    full = base / "full"
    generate(full, users=users, items=items, seed=3, fmt="csv")
    train = base / "train"
    train.mkdir()
    inter = pd.read_csv(full / "interactions.csv", dtype=str)
    held = np.random.default_rng(7).random(len(inter)) < 0.2
    inter[~held].to_csv(train / "interactions.csv", index=False)
    for name in ("users", "items", "artwork"):
        if (full / f"{name}.csv").exists():
            (train / f"{name}.csv").write_bytes((full / f"{name}.csv").read_bytes())
    return train, inter[held]


def held_out_ndcg(bundle: Bundle, held: pd.DataFrame, k: int = 10) -> float:
    """NDCG@k of the bundle's factors on held-out rows (seen items excluded)."""
    users = pd.Index(bundle.user_ids.astype(str))
    items = pd.Index(bundle.item_ids.astype(str))
    rows = users.get_indexer(held["user_id"])
    cols = items.get_indexer(held["item_id"])
    keep = (rows >= 0) & (cols >= 0)
    test = sp.csr_matrix(
        (np.ones(int(keep.sum())), (rows[keep], cols[keep])), shape=(len(users), len(items))
    )
    test.data[:] = 1
    targets = np.flatnonzero(np.diff(test.indptr) > 0)
    scores = np.asarray(bundle.user_factors[targets]) @ np.asarray(bundle.item_factors).T
    seen = sp.csr_matrix(bundle.user_items)[targets]
    scores[seen.nonzero()] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return ranking_metrics(top, test[targets], k).ndcg


def read_dataset(path: Path) -> pd.DataFrame:
    """A Parquet dataset (directory) or file as one frame."""
    return pq.read_table(path).to_pandas()


def same_lists(a: pd.DataFrame, b: pd.DataFrame, key: str, item: str, tol: float = 1e-4) -> None:
    """Per ``key``, the same ``item``s in the same order up to score ties."""
    a = a.sort_values([key, "rank"]).reset_index(drop=True)
    b = b.sort_values([key, "rank"]).reset_index(drop=True)
    assert sorted(a[key].unique()) == sorted(b[key].unique())
    assert len(a) == len(b)
    assert np.allclose(a["score"].to_numpy(), b["score"].to_numpy(), atol=tol)
    differ = a[item].to_numpy() != b[item].to_numpy()
    # Where the items differ, the two positions must hold a score tie.
    for pos in (int(p) for p in np.flatnonzero(differ)):
        owner = a.loc[pos, key]
        score = cast(float, a.loc[pos, "score"])  # one cell (the stub allows any scalar)
        ties_a = set(a[(a[key] == owner) & (np.abs(a["score"] - score) <= tol)][item])
        ties_b = set(b[(b[key] == owner) & (np.abs(b["score"] - score) <= tol)][item])
        assert a.loc[pos, item] in ties_b and b.loc[pos, item] in ties_a, (owner, pos)
