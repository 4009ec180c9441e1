"""One small interface for every model, in the style of implicit's ``RecommenderBase``.

A model is fitted on an ``InteractionMatrix`` (users x items confidences) and optionally
the whole ``Dataset`` (for user/item features and regions). It answers in batch:
``recommend`` takes an array of user rows and the matching rows of the user-items matrix
and returns ``[n, N]`` item indices and scores. A fitted model has one file format, the
bundle: ``training.pipeline`` ships its factors (and a linear model's projection) through
``recsvc.bundle``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import scipy.sparse as sp

if TYPE_CHECKING:
    from training.data import Dataset, InteractionMatrix

# Scores are computed in blocks of users so a dense [block, I] slab stays small.
_SCORE_BLOCK_CELLS = 8_000_000


class RecommenderBase(ABC):
    """fit / recommend; subclasses fill ``score_users``."""

    name: ClassVar[str]

    def __init__(self, **params: Any) -> None:
        self.params: dict[str, Any] = dict(params)
        self.n_items = 0

    # --- learning -------------------------------------------------------------------
    @abstractmethod
    def fit(self, train: InteractionMatrix, dataset: Dataset | None = None) -> RecommenderBase:
        """Learn from the training matrix; returns self."""

    @abstractmethod
    def score_users(self, user_idx: np.ndarray, user_items: sp.csr_matrix) -> np.ndarray:
        """Dense [n, I] float32 scores for the given users (rows of ``user_items``)."""

    # --- embeddings (models that have them) -----------------------------------------
    @property
    def user_factors(self) -> np.ndarray | None:
        return None

    @property
    def item_factors(self) -> np.ndarray | None:
        return None

    # --- queries --------------------------------------------------------------------
    def recommend(
        self,
        user_idx: np.ndarray,
        user_items: sp.csr_matrix,
        N: int,
        filter_already_liked_items: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``N`` items for each user in ``user_idx``.

        ``user_items`` holds one row per entry of ``user_idx`` (as in implicit 0.7): the
        items each user interacted with, masked out when ``filter_already_liked_items``.
        Returns ``(items [n, N] int64, scores [n, N] float32)``, best first; slots with
        nothing left to recommend hold item -1 and score -inf.
        """
        user_idx = np.atleast_1d(np.asarray(user_idx, dtype=np.int64))
        user_items = sp.csr_matrix(user_items)
        if user_items.shape[0] != user_idx.size:
            raise ValueError("user_items must have one row per entry of user_idx")
        n_items = self.n_items
        N = int(min(N, n_items))
        ids = np.full((user_idx.size, N), -1, dtype=np.int64)
        scores = np.full((user_idx.size, N), -np.inf, dtype=np.float32)
        block = max(1, _SCORE_BLOCK_CELLS // max(n_items, 1))
        for start in range(0, user_idx.size, block):
            stop = min(start + block, user_idx.size)
            rows = user_items[start:stop]
            s = np.asarray(self.score_users(user_idx[start:stop], rows), dtype=np.float32)
            if filter_already_liked_items:
                r, c = rows.nonzero()
                s[r, c] = -np.inf
            ids[start:stop], scores[start:stop] = top_n(s, N)
        return ids, scores


def top_n(scores: np.ndarray, N: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top ``N`` of a dense [n, I] score matrix, best first (-inf slots -> -1)."""
    n, n_items = scores.shape
    N = min(N, n_items)
    if N <= 0:
        return np.empty((n, 0), np.int64), np.empty((n, 0), np.float32)
    if n_items > N:
        part = np.argpartition(-scores, N - 1, axis=1)[:, :N]
    else:
        part = np.broadcast_to(np.arange(n_items), (n, n_items)).copy()
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    ids = np.take_along_axis(part, order, axis=1).astype(np.int64)
    top = np.take_along_axis(part_scores, order, axis=1).astype(np.float32)
    ids[~np.isfinite(top) & (top < 0)] = -1
    return ids, top


def dense_factors(values: Any) -> np.ndarray:
    """implicit may hand back GPU or non-contiguous arrays: plain C float32."""
    if hasattr(values, "to_numpy"):
        values = values.to_numpy()
    return np.ascontiguousarray(values, dtype=np.float32)
