"""LightFM hybrid (WARP) with user and item features: cold-start users and new items.

Features are named ``"column=value"``: a user has ``user_id=<id>`` (identity) plus one
feature per column of the users file (``region`` and every other column); an item has
``item_id=<id>`` plus one per item column (except ``regions``, an availability list).
Items without training interactions get no identity feature: their representation comes
from their features only (an untrained identity embedding would be noise).

Each feature row is L1-normalized (weights ``1 / number of features of the row``), as
``lightfm.data.Dataset(normalize=True)`` does. A user with no history is therefore the
mean of its known feature rows, which ``cold_user_vector`` reproduces in numpy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from recsvc.bundle import HybridArrays
from training.errors import TrainingError
from training.models.base import RecommenderBase, dense_factors

if TYPE_CHECKING:
    from training.data import Dataset, InteractionMatrix

HYBRID_DEFAULTS: dict[str, Any] = {
    "factors": 64,
    "loss": "warp",
    "learning_rate": 0.05,
    "item_alpha": 1e-6,
    "user_alpha": 1e-6,
    "max_sampled": 30,
    "epochs": 30,
    "random_state": 42,
    "num_threads": 0,
    # Larger matrices are fitted on a seeded uniform sample of about this many cells: the
    # hybrid serves users with no history from their features, which a sample teaches as
    # well, and 30 WARP epochs over 20M cells would take over an hour on two cores.
    "max_interactions": 2_000_000,
}
ITEM_SKIP_COLUMNS = ("item_id", "regions")


def feature_columns(frame: pd.DataFrame | None, id_column: str) -> list[str]:
    """The categorical feature columns of a users/items frame."""
    if frame is None:
        return []
    skip = ITEM_SKIP_COLUMNS if id_column == "item_id" else (id_column,)
    return [c for c in frame.columns if c not in skip]


def _feature_names(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """[rows, columns] of "column=value" strings ("" where the value is missing)."""
    out = {}
    for col in columns:
        values = frame[col].astype("string").fillna("")
        out[col] = np.where(values.to_numpy(dtype=str) == "", "", f"{col}=" + values)
    return pd.DataFrame(out, index=frame.index)


def feature_matrix(
    ids: np.ndarray,
    frame: pd.DataFrame | None,
    id_column: str,
    vocabulary: dict[str, int],
    with_identity: np.ndarray,
    grow: bool,
) -> sp.csr_matrix:
    """L1-normalized [len(ids), len(vocabulary)] rows: identity (where asked) + features.

    With ``grow`` unseen feature names are added to ``vocabulary``; otherwise dropped.
    """
    rows: list[int] = []
    cols: list[int] = []

    def add(row: int, name: str) -> None:
        col = vocabulary.get(name)
        if col is None and grow:
            col = vocabulary[name] = len(vocabulary)
        if col is not None:
            rows.append(row)
            cols.append(col)

    for row in np.flatnonzero(with_identity):
        add(int(row), f"{id_column}={ids[row]}")
    columns = feature_columns(frame, id_column)
    if frame is not None and columns:
        indexed = frame.drop_duplicates(id_column)
        indexed.index = pd.Index(indexed[id_column].astype(str))
        names = _feature_names(indexed.reindex(ids.astype(str)), columns).to_numpy(dtype=str)
        for row, col in zip(*np.nonzero(names != ""), strict=True):
            add(int(row), str(names[row, col]))
    data = np.ones(len(rows), dtype=np.float32)
    m = sp.csr_matrix((data, (rows, cols)), shape=(len(ids), len(vocabulary)), dtype=np.float32)
    m.sum_duplicates()
    counts = np.asarray(m.sum(axis=1)).ravel()
    m = sp.diags(1.0 / np.maximum(counts, 1.0)).astype(np.float32) @ m
    return sp.csr_matrix(m, dtype=np.float32)


class LightFMHybrid(RecommenderBase):
    """LightFM with identity + "column=value" features for users and items."""

    name = "lightfm"

    def __init__(self, **params: Any) -> None:
        merged = {**HYBRID_DEFAULTS, **params}
        unknown = set(merged) - set(HYBRID_DEFAULTS)
        if unknown:
            raise TrainingError(f"unknown LightFM parameter(s): {', '.join(sorted(unknown))}")
        super().__init__(**merged)
        self.user_feature_names = np.array([], dtype=str)
        self.item_feature_names = np.array([], dtype=str)
        self.item_ids = np.array([], dtype=str)
        self._arrays: dict[str, np.ndarray] = {}
        self.lightfm: Any = None  # the fitted LightFM object (in memory only, never saved)
        self.fitted_interactions = 0  # cells LightFM saw (a sample above max_interactions)
        self._item_columns: list[str] = []

    # --- fitting --------------------------------------------------------------------
    def fit(self, train: InteractionMatrix, dataset: Dataset | None = None) -> LightFMHybrid:
        import os

        from lightfm import LightFM

        p = self.params
        users = None if dataset is None else dataset.users
        items = None if dataset is None else dataset.items
        x = sp.csr_matrix(train.matrix)
        has_items = np.diff(x.tocsc().indptr) > 0
        user_vocab: dict[str, int] = {}
        item_vocab: dict[str, int] = {}
        uf = feature_matrix(
            train.user_ids, users, "user_id", user_vocab, np.ones(len(train.user_ids), bool), True
        )
        itf = feature_matrix(train.item_ids, items, "item_id", item_vocab, has_items, True)
        model = LightFM(
            no_components=int(p["factors"]),
            loss=str(p["loss"]),
            learning_rate=float(p["learning_rate"]),
            item_alpha=float(p["item_alpha"]),
            user_alpha=float(p["user_alpha"]),
            max_sampled=int(p["max_sampled"]),
            random_state=p["random_state"],
        )
        rows, cols = x.nonzero()
        cap = int(p["max_interactions"])
        if cap < 1:
            raise TrainingError(f"lightfm max_interactions must be >= 1, got {cap}")
        if x.nnz > cap:
            rng = np.random.default_rng(p["random_state"])
            keep = rng.random(x.nnz) < cap / x.nnz
            rows, cols = rows[keep], cols[keep]
        self.fitted_interactions = int(rows.size)
        binary = sp.coo_matrix((np.ones(rows.size, np.float32), (rows, cols)), shape=x.shape)
        threads = int(p["num_threads"]) or (os.cpu_count() or 1)
        with threadpool_limits(1, "blas"):
            model.fit(
                binary,
                user_features=uf,
                item_features=itf,
                epochs=int(p["epochs"]),
                num_threads=threads,
            )
        self.lightfm = model
        self.user_feature_names = _names(user_vocab)
        self.item_feature_names = _names(item_vocab)
        self.item_ids = np.asarray(train.item_ids).astype(str)
        self._item_columns = feature_columns(items, "item_id")
        user_bias, user_repr = model.get_user_representations(uf)
        item_bias, item_repr = model.get_item_representations(itf)
        self._arrays = {
            "user_feature_embeddings": dense_factors(model.user_embeddings),
            "user_feature_biases": dense_factors(model.user_biases),
            "item_feature_embeddings": dense_factors(model.item_embeddings),
            "item_feature_biases": dense_factors(model.item_biases),
            # [repr, 1] . [repr, bias] = LightFM's score minus the per-user constant bias
            "user_factors": _with_column(user_repr, np.ones(len(user_bias), np.float32)),
            "item_factors": _with_column(item_repr, item_bias),
        }
        self.n_items = x.shape[1]
        return self

    # --- embeddings and scores ------------------------------------------------------
    @property
    def user_factors(self) -> np.ndarray | None:
        return self._arrays.get("user_factors")

    @property
    def item_factors(self) -> np.ndarray | None:
        return self._arrays.get("item_factors")

    def score_users(self, user_idx: np.ndarray, user_items: sp.csr_matrix) -> np.ndarray:
        users, items = self.user_factors, self.item_factors
        if users is None or items is None:
            raise TrainingError("model 'lightfm' is not fitted")
        return users[np.asarray(user_idx)] @ items.T

    def hybrid_arrays(self) -> HybridArrays:
        """The model over its own training items, as plain arrays."""
        return self.to_arrays(self.item_ids)

    def to_arrays(self, item_ids: np.ndarray, items: pd.DataFrame | None = None) -> HybridArrays:
        """``HybridArrays`` aligned with ``item_ids``.

        Items of the training universe keep their representation; other items get one
        from their features in ``items`` (a frame like the contract's items file), or a
        zero vector and the lowest bias when they have no known feature.
        """
        if "item_factors" not in self._arrays:
            raise TrainingError("model 'lightfm' is not fitted")
        a = self._arrays
        d = a["user_feature_embeddings"].shape[1]
        item_ids = np.asarray(item_ids).astype(str)
        known = pd.Index(self.item_ids).get_indexer(item_ids)
        reprs = np.zeros((item_ids.size, d), dtype=np.float32)
        biases = np.full(
            item_ids.size, float(a["item_feature_biases"].min(initial=0.0)), np.float32
        )
        hit = known >= 0
        reprs[hit] = a["item_factors"][known[hit], :d]
        biases[hit] = a["item_factors"][known[hit], d]
        new = np.flatnonzero(~hit)
        if new.size and items is not None:
            vocab = {str(n): i for i, n in enumerate(self.item_feature_names)}
            f = feature_matrix(
                item_ids[new], items, "item_id", vocab, np.zeros(new.size, bool), False
            )
            has_feature = np.diff(f.indptr) > 0
            reprs[new[has_feature]] = (f @ a["item_feature_embeddings"])[has_feature]
            biases[new[has_feature]] = (f @ a["item_feature_biases"])[has_feature]
        user_rows = np.array(
            [i for i, n in enumerate(self.user_feature_names) if not n.startswith("user_id=")],
            dtype=np.int64,
        )
        return HybridArrays(
            user_feature_names=self.user_feature_names[user_rows],
            user_feature_embeddings=a["user_feature_embeddings"][user_rows],
            user_feature_biases=a["user_feature_biases"][user_rows],
            item_representations=reprs,
            item_biases=biases,
        )


def _names(vocabulary: Mapping[str, int]) -> np.ndarray:
    names = np.empty(len(vocabulary), dtype=object)
    for name, col in vocabulary.items():
        names[col] = name
    return names.astype(str)


def _with_column(matrix: np.ndarray, column: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.hstack([matrix, np.asarray(column)[:, None]]), np.float32)
