"""Popularity baselines: global, and per region shrunk toward global.

Popularity of an item = number of distinct training users who interacted with it, as a
share of all such (user, item) pairs. A region's popularity is a Bayesian (Dirichlet)
posterior mean with the global shares as the prior:

    p_r[i] = (n_r[i] + m * p[i]) / (N_r + m)

where ``n_r[i]`` counts region r's users on item i, ``N_r = sum_i n_r[i]`` and ``m`` is
``prior_strength`` (in interactions). A region with N_r << m ranks like the world; a big
region ranks by its own counts. Users without a known region get the global list.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from training.errors import TrainingError
from training.models.base import RecommenderBase

if TYPE_CHECKING:
    from training.data import Dataset, InteractionMatrix


def item_popularity(user_items: sp.csr_matrix) -> np.ndarray:
    """[I] float64 share of (distinct user, item) pairs per item; sums to 1 (or all 0)."""
    counts = np.bincount(sp.csr_matrix(user_items).indices, minlength=user_items.shape[1])
    total = counts.sum()
    return counts / total if total else counts.astype(np.float64)


def shrunk_region_popularity(
    user_items: sp.csr_matrix, user_region: np.ndarray, n_regions: int, prior_strength: float
) -> np.ndarray:
    """[R, I] float64 per-region shares shrunk toward global (module docstring)."""
    x = sp.csr_matrix(user_items)
    global_p = item_popularity(x)
    rows = np.repeat(user_region, np.diff(x.indptr))
    keep = rows >= 0
    counts = sp.coo_matrix(
        (np.ones(int(keep.sum())), (rows[keep], x.indices[keep])), shape=(n_regions, x.shape[1])
    ).toarray()
    totals = counts.sum(axis=1, keepdims=True)
    return (counts + prior_strength * global_p[None, :]) / (totals + prior_strength)


def user_regions(
    train: InteractionMatrix, dataset: Dataset | None
) -> tuple[np.ndarray, np.ndarray]:
    """(region names [R] str sorted, region index per training user [U] int64, -1 = none)."""
    users = None if dataset is None else dataset.users
    if users is None or "region" not in users.columns:
        return np.array([], dtype=str), np.full(len(train.user_ids), -1, dtype=np.int64)
    region_of = users.set_index("user_id")["region"].astype(str)
    names = np.array(sorted(set(region_of.values) - {""}), dtype=str)
    per_user = region_of.reindex(train.user_ids.astype(str)).fillna("").to_numpy(dtype=str)
    if names.size == 0:
        return names, np.full(len(train.user_ids), -1, dtype=np.int64)
    idx = np.clip(np.searchsorted(names, per_user), 0, names.size - 1)
    return names, np.where(names[idx] == per_user, idx, -1).astype(np.int64)


class PopularityModel(RecommenderBase):
    """The same most-popular list for everyone."""

    name = "popularity"

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.popularity: np.ndarray | None = None

    def fit(self, train: InteractionMatrix, dataset: Dataset | None = None) -> PopularityModel:
        self.popularity = item_popularity(train.matrix).astype(np.float32)
        self.n_items = train.matrix.shape[1]
        return self

    def score_users(self, user_idx: np.ndarray, user_items: sp.csr_matrix) -> np.ndarray:
        if self.popularity is None:
            raise TrainingError("model 'popularity' is not fitted")
        return np.tile(self.popularity, (len(user_idx), 1))


class RegionalPopularityModel(RecommenderBase):
    """Most popular in the user's region, shrunk toward global (module docstring)."""

    name = "region_popularity"

    def __init__(self, **params: Any) -> None:
        super().__init__(**{"prior_strength": 1000.0, **params})
        self.global_popularity: np.ndarray | None = None
        self.region_popularity = np.zeros((0, 0), dtype=np.float32)
        self.region_names = np.array([], dtype=str)
        self.user_region = np.array([], dtype=np.int64)

    def fit(
        self, train: InteractionMatrix, dataset: Dataset | None = None
    ) -> RegionalPopularityModel:
        self.region_names, self.user_region = user_regions(train, dataset)
        self.global_popularity = item_popularity(train.matrix).astype(np.float32)
        self.region_popularity = shrunk_region_popularity(
            train.matrix,
            self.user_region,
            len(self.region_names),
            float(self.params["prior_strength"]),
        ).astype(np.float32)
        self.n_items = train.matrix.shape[1]
        return self

    def region_scores(self, regions: np.ndarray) -> np.ndarray:
        """[n, I] scores for region names (unknown or empty region -> global)."""
        if self.global_popularity is None:
            raise TrainingError("model 'region_popularity' is not fitted")
        regions = np.asarray(regions, dtype=str)
        out = np.tile(self.global_popularity, (regions.size, 1))
        if self.region_names.size:
            idx = np.clip(
                np.searchsorted(self.region_names, regions), 0, self.region_names.size - 1
            )
            known = self.region_names[idx] == regions
            out[known] = self.region_popularity[idx[known]]
        return out

    def score_users(self, user_idx: np.ndarray, user_items: sp.csr_matrix) -> np.ndarray:
        if self.global_popularity is None:
            raise TrainingError("model 'region_popularity' is not fitted")
        region = self.user_region[np.asarray(user_idx)]
        out = np.tile(self.global_popularity, (region.size, 1))
        known = region >= 0
        out[known] = self.region_popularity[region[known]]
        return out
