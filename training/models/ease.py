"""EASE (Steck 2019): a closed-form item-item model, the baseline to beat on small catalogs.

``B = I - P / diag(P)`` with ``P = (X^T X + lambda I)^-1`` and a zero diagonal; a user's
scores are ``x_u B``. The dense ``I x I`` inverse limits it to catalogs of at most
``MAX_ITEMS`` items. It has no embeddings, so it never ships through FAISS: it is the bar.
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
