"""Linear embedding models: a user's vector is a fixed linear map of their seen items.

``user = x_u @ projection`` (``x_u`` the binary row of seen items) and scores are
``user @ items^T``; a new interaction folds in exactly by adding its row of ``projection``
(serving's ``linear_fold_in``). ease-lowrank and its blend with ALS are of this kind.

Both may calibrate item scores by popularity: ``items`` rows are multiplied by
``(n_i + 1) ** popularity_exponent`` (``n_i`` = training users who have item i), so every
user's score of item i is scaled by the same factor. A negative exponent damps popular
items, the one-parameter popularity correction of RP3beta (Paudel et al. 2017) applied to
any linear scorer; 0 leaves the model as it is. It touches neither ``projection`` nor the
user vectors, so fold-in is unchanged. ``train`` chooses it on validation folds
(``training.tuning.tune_blend``).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from training.errors import TrainingError
from training.models.base import RecommenderBase


class LinearEmbeddingModel(RecommenderBase):
    """Holds ``projection`` [I, d], ``items`` [I, d] and the training users' ``users``
    [U, d] (= their seen rows @ projection); subclasses fit them and call :meth:`_set`."""

    def __init__(self, **params: object) -> None:
        super().__init__(**params)
        self._projection: np.ndarray | None = None
        self._items: np.ndarray | None = None
        self._users: np.ndarray | None = None

    def _set(self, projection: np.ndarray, items: np.ndarray, users: np.ndarray) -> None:
        self._projection = np.ascontiguousarray(projection, dtype=np.float32)
        self._items = np.ascontiguousarray(items, dtype=np.float32)
        self._users = np.ascontiguousarray(users, dtype=np.float32)

    def _fitted(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._projection is None or self._items is None or self._users is None:
            raise TrainingError(f"model {self.name!r} is not fitted")
        return self._projection, self._items, self._users

    @property
    def projection(self) -> np.ndarray | None:
        """[I, d]: user vector = binary seen row @ projection (linear fold-in)."""
        return self._projection

    @property
    def user_factors(self) -> np.ndarray | None:
        return self._users

    @property
    def item_factors(self) -> np.ndarray | None:
        return self._items

    def score_users(self, user_idx: np.ndarray, user_items: sp.csr_matrix) -> np.ndarray:
        projection, items, _ = self._fitted()
        vectors = np.asarray(binary_rows(user_items) @ projection, dtype=np.float32)
        return vectors @ items.T


def popularity_scale(x: sp.spmatrix, exponent: float) -> np.ndarray:
    """[I] float64 ``(n_i + 1) ** exponent``, ``n_i`` = rows of ``x`` with item i stored
    (module doc); all ones for exponent 0."""
    if not -1.0 <= exponent <= 1.0:
        raise TrainingError(f"popularity_exponent must be between -1 and 1 (got {exponent})")
    counts = np.asarray(binary_rows(x).sum(axis=0), dtype=np.float64).ravel()
    return np.asarray((counts + 1.0) ** float(exponent))


def binary_rows(matrix: sp.spmatrix) -> sp.csr_matrix:
    """``matrix`` as float32 CSR with every stored nonzero set to 1 (seen = 1)."""
    x = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    x.eliminate_zeros()
    x.data[:] = 1.0
    return x
