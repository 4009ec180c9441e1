"""EASE (Steck 2019): a closed-form item-item model, the baseline to beat on small catalogs.

``B = I - P / diag(P)`` with ``P = (X^T X + lambda I)^-1`` and a zero diagonal; a user's
scores are ``x_u B``. The dense ``I x I`` inverse limits it to catalogs of at most
``MAX_ITEMS`` items. Full ``B`` has no embeddings, so it is the bar; ``EASELowRankModel``
factorizes ``B`` into user/item embeddings that do ship through FAISS.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from training.errors import TrainingError
from training.models.base import RecommenderBase

if TYPE_CHECKING:
    from training.data import Dataset, InteractionMatrix

MAX_ITEMS = 20_000


class EASEModel(RecommenderBase):
    """Embarrassingly shallow autoencoder on binarized interactions (``binary=True``)."""

    name = "ease"

    def __init__(self, **params: Any) -> None:
        merged = {"lambda": 500.0, "binary": True, **params}
        super().__init__(**merged)
        self._b: np.ndarray | None = None

    def fit(self, train: InteractionMatrix, dataset: Dataset | None = None) -> EASEModel:
        x = sp.csr_matrix(train.matrix, dtype=np.float64, copy=True)
        n_items = x.shape[1]
        if n_items > MAX_ITEMS:
            raise TrainingError(
                f"EASE needs a dense {n_items}x{n_items} inverse; it is only run for catalogs "
                f"of at most {MAX_ITEMS} items"
            )
        if self.params["binary"]:
            x.data[:] = 1.0
        gram = (x.T @ x).toarray()
        gram[np.diag_indices(n_items)] += float(self.params["lambda"])
        p = np.linalg.inv(gram)
        b = -p / np.diag(p)[None, :]
        b[np.diag_indices(n_items)] = 0.0
        self._b = b.astype(np.float32)
        self.n_items = n_items
        return self

    def score_users(self, user_idx: np.ndarray, user_items: sp.csr_matrix) -> np.ndarray:
        if self._b is None:
            raise TrainingError("model 'ease' is not fitted")
        x = sp.csr_matrix(user_items, dtype=np.float32, copy=True)
        if self.params["binary"]:
            x.data[:] = 1.0
        return np.asarray(x @ self._b)

    def arrays(self) -> dict[str, np.ndarray]:
        if self._b is None:
            raise TrainingError("model 'ease' is not fitted")
        return {"weights": self._b}

    def set_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        self._b = np.ascontiguousarray(arrays["weights"], dtype=np.float32)


class EASELowRankModel(RecommenderBase):
    """EASE's ``B`` factorized into embeddings, so it ships through FAISS like ALS.

    ``B ~ U_r S_r V_r^T`` (truncated SVD). With ``P = U_r S_r`` (``projection``, items x r)
    a user's vector is ``x_u P`` (``x_u`` the binary row of seen items) and an item's is
    its row of ``V_r``: ``x_u B ~ (x_u P) V_r^T``. A new interaction folds in exactly by
    adding its row of ``P``. On MovieLens small, r=512 matches full EASE (quality.md).
    The SVD is randomized (Halko et al.: range finder with power iterations) because a
    full one of a 9.7k x 9.7k matrix took minutes.
    """

    name = "ease-lowrank"

    def __init__(self, **params: Any) -> None:
        merged = {"lambda": 200.0, "rank": 512, "power_iterations": 3, "random_state": 42}
        merged.update(params)
        super().__init__(**merged)
        self._users: np.ndarray | None = None
        self._items: np.ndarray | None = None
        self._projection: np.ndarray | None = None

    def fit(self, train: InteractionMatrix, dataset: Dataset | None = None) -> EASELowRankModel:
        x = _binary(train.matrix)
        n_items = x.shape[1]
        if n_items > MAX_ITEMS:
            raise TrainingError(
                f"ease-lowrank needs a dense {n_items}x{n_items} inverse; it is only run for "
                f"catalogs of at most {MAX_ITEMS} items (use als)"
            )
        b = _ease_weights(x, float(self.params["lambda"]))
        rank = max(1, min(int(self.params["rank"]), n_items))
        u, s, vt = _randomized_svd(
            b, rank, int(self.params["power_iterations"]), int(self.params["random_state"])
        )
        self._projection = np.ascontiguousarray(u * s[None, :], dtype=np.float32)
        self._items = np.ascontiguousarray(vt.T, dtype=np.float32)
        self._users = np.ascontiguousarray(x @ self._projection, dtype=np.float32)
        self.n_items = n_items
        return self

    @property
    def projection(self) -> np.ndarray | None:
        """``P = U_r S_r`` [I, r]: user vector = binary seen row @ P."""
        return self._projection

    @property
    def user_factors(self) -> np.ndarray | None:
        return self._users

    @property
    def item_factors(self) -> np.ndarray | None:
        return self._items

    def score_users(self, user_idx: np.ndarray, user_items: sp.csr_matrix) -> np.ndarray:
        if self._projection is None or self._items is None:
            raise TrainingError("model 'ease-lowrank' is not fitted")
        vectors = np.asarray(_binary(user_items) @ self._projection, dtype=np.float32)
        return vectors @ self._items.T

    def arrays(self) -> dict[str, np.ndarray]:
        if self._projection is None or self._items is None or self._users is None:
            raise TrainingError("model 'ease-lowrank' is not fitted")
        return {"projection": self._projection, "items": self._items, "users": self._users}

    def set_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        self._projection = np.ascontiguousarray(arrays["projection"], dtype=np.float32)
        self._items = np.ascontiguousarray(arrays["items"], dtype=np.float32)
        self._users = np.ascontiguousarray(arrays["users"], dtype=np.float32)


def _binary(matrix: sp.spmatrix) -> sp.csr_matrix:
    x = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    x.eliminate_zeros()
    x.data[:] = 1.0
    return x


def _ease_weights(x: sp.csr_matrix, lam: float) -> np.ndarray:
    """EASE's ``B`` (float64, zero diagonal) for a binary ``x``."""
    n_items = x.shape[1]
    x64 = sp.csr_matrix(x, dtype=np.float64)
    gram = (x64.T @ x64).toarray()
    gram[np.diag_indices(n_items)] += lam
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)[None, :]
    b[np.diag_indices(n_items)] = 0.0
    return np.asarray(b)


def _randomized_svd(
    a: np.ndarray, rank: int, power_iterations: int, seed: int, oversample: int = 16
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-``rank`` SVD of a dense square matrix; exact when ``rank`` covers all columns."""
    n = a.shape[1]
    width = min(n, rank + oversample)
    if width >= n:
        u, s, vt = np.linalg.svd(a, full_matrices=False)
        return u[:, :rank], s[:rank], vt[:rank]
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(a @ rng.standard_normal((n, width)))
    for _ in range(power_iterations):
        # Re-orthonormalize each half step so small singular directions survive in float64.
        q, _ = np.linalg.qr(a.T @ q)
        q, _ = np.linalg.qr(a @ q)
    small_u, s, vt = np.linalg.svd(q.T @ a, full_matrices=False)
    return (q @ small_u)[:, :rank], s[:rank], vt[:rank]
