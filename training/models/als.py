"""implicit ALS (the default shipped model) and BPR on weighted, confidence-scaled data.

Confidence: the folded interaction weights are optionally re-weighted (``weighting``:
``none``, ``bm25`` or ``tfidf``: implicit's ``nearest_neighbours`` formulas with users as
documents and items as terms, see ``weight_interactions``) and then scaled by ``alpha``:
implicit's ALS gives an observed cell the weight ``alpha * w`` and every unobserved cell
the weight 1, so ``alpha`` is the observed/unobserved ratio.

implicit wants BLAS single-threaded (it parallelizes itself over ``num_threads``; 0 = all
cores), so every call into it runs under ``threadpool_limits(1, "blas")``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.linalg  # noqa: F401  (loads the BLAS that implicit uses, so the limit reaches it)
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from training.errors import TrainingError
from training.models.base import RecommenderBase, dense_factors

if TYPE_CHECKING:
    from training.data import Dataset, InteractionMatrix

WEIGHTINGS = ("none", "bm25", "tfidf", "log")

# Defaults found by the tuning runs on MovieLens (docs/benchmarks/quality.md); the tuner
# searches around them.
ALS_DEFAULTS: dict[str, Any] = {
    "factors": 256,
    "regularization": 20.0,
    "alpha": 3.0,
    "iterations": 20,
    "weighting": "none",
    "bm25_k1": 100.0,
    "bm25_b": 0.8,
    "random_state": 42,
    "num_threads": 0,
}
# Best of a small MovieLens validation check (lr 0.05 / 100 epochs overfit: 0.095 vs 0.153).
BPR_DEFAULTS: dict[str, Any] = {
    "factors": 64,
    "learning_rate": 0.01,
    "regularization": 0.01,
    "iterations": 50,
    "random_state": 42,
    "num_threads": 0,
}


def weight_interactions(
    user_items: sp.csr_matrix, weighting: str = "none", k1: float = 100.0, b: float = 0.8
) -> sp.csr_matrix:
    """Re-weight a users x items matrix: ``none`` | ``bm25`` | ``tfidf`` | ``log`` (float32
    CSR).

    ``log`` compresses heavy-tailed counts (play counts: 1 to 10^5 on Last.fm) to
    ``log2(1 + w)``: a weight of 1 stays 1, so on binary data it is ``none``, while a
    10,000-play artist gets confidence ~13 instead of ~10^4 and stops drowning the rest of
    the user's row. It is not rescaled to the input's mean (that would undo it).

    A user's history is the document and items are its terms: an item's weight is scaled by
    its inverse document frequency (popular items count less) and, for BM25, each user's
    row is length-normalized (heavy users' interactions count less each). The formulas are
    implicit's ``bm25_weight``/``tfidf_weight`` applied to the users x items matrix. (Its
    examples apply them to items x users; on MovieLens that orientation collapsed
    validation NDCG@10 from 0.22 to 0.07, see docs/benchmarks/quality.md.) The weights are
    rescaled to the input's mean observed weight so ``alpha`` means the same under every
    weighting.
    """
    if weighting not in WEIGHTINGS:
        raise TrainingError(f"weighting must be one of {', '.join(WEIGHTINGS)}, not '{weighting}'")
    x = sp.csr_matrix(user_items, dtype=np.float32)
    if weighting == "none" or x.nnz == 0:
        return x
    if weighting == "log":
        out = x.copy()
        out.data = (np.log1p(np.maximum(out.data, 0.0)) / np.log(2.0)).astype(np.float32)
        return out
    coo = sp.coo_matrix(x)
    n_docs = float(coo.shape[0])
    df = np.bincount(coo.col, minlength=coo.shape[1])
    # log(N) - log1p(df) goes negative for an item every user touched: floor it.
    idf = np.maximum(np.log(n_docs) - np.log1p(df), 1e-3)
    data = coo.data.astype(np.float64)
    if weighting == "tfidf":
        data = np.sqrt(data) * idf[coo.col]
    else:
        row_sums = np.ravel(coo.sum(axis=1))
        length_norm = (1.0 - b) + b * row_sums / max(row_sums.mean(), 1e-12)
        data = data * (k1 + 1.0) / (k1 * length_norm[coo.row] + data) * idf[coo.col]
    data *= float(coo.data.mean()) / max(float(data.mean()), 1e-12)
    weighted = sp.coo_matrix((data.astype(np.float32), (coo.row, coo.col)), shape=coo.shape)
    return sp.csr_matrix(weighted, dtype=np.float32)


class _EmbeddingModel(RecommenderBase):
    """A model whose score is ``user_factors[u] @ item_factors.T``."""

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._user_factors: np.ndarray | None = None
        self._item_factors: np.ndarray | None = None

    @property
    def user_factors(self) -> np.ndarray | None:
        return self._user_factors

    @property
    def item_factors(self) -> np.ndarray | None:
        return self._item_factors

    def _require(self) -> tuple[np.ndarray, np.ndarray]:
        if self._user_factors is None or self._item_factors is None:
            raise TrainingError(f"model '{self.name}' is not fitted")
        return self._user_factors, self._item_factors

    def score_users(self, user_idx: np.ndarray, user_items: sp.csr_matrix) -> np.ndarray:
        users, items = self._require()
        return users[np.asarray(user_idx)] @ items.T


class ALSModel(_EmbeddingModel):
    """implicit's ``AlternatingLeastSquares`` (CPU) on weighted confidences."""

    name = "als"

    def __init__(self, **params: Any) -> None:
        merged = {**ALS_DEFAULTS, **params}
        unknown = set(merged) - set(ALS_DEFAULTS)
        if unknown:
            raise TrainingError(f"unknown ALS parameter(s): {', '.join(sorted(unknown))}")
        super().__init__(**merged)

    def confidence(self, user_items: sp.csr_matrix) -> sp.csr_matrix:
        p = self.params
        return weight_interactions(user_items, p["weighting"], p["bm25_k1"], p["bm25_b"])

    def fit(self, train: InteractionMatrix, dataset: Dataset | None = None) -> ALSModel:
        from implicit.cpu.als import AlternatingLeastSquares

        p = self.params
        # implicit checks the BLAS threads in __init__ too, so construct inside the limit
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(
                factors=int(p["factors"]),
                regularization=float(p["regularization"]),
                alpha=float(p["alpha"]),
                iterations=int(p["iterations"]),
                random_state=p["random_state"],
                num_threads=int(p["num_threads"]),
            )
            model.fit(self.confidence(train.matrix), show_progress=False)
        self._user_factors = dense_factors(model.user_factors)
        self._item_factors = dense_factors(model.item_factors)
        self.n_items = train.matrix.shape[1]
        return self


class BPRModel(_EmbeddingModel):
    """implicit's ``BayesianPersonalizedRanking`` (CPU); factors include its bias column."""

    name = "bpr"

    def __init__(self, **params: Any) -> None:
        merged = {**BPR_DEFAULTS, **params}
        unknown = set(merged) - set(BPR_DEFAULTS)
        if unknown:
            raise TrainingError(f"unknown BPR parameter(s): {', '.join(sorted(unknown))}")
        super().__init__(**merged)

    def fit(self, train: InteractionMatrix, dataset: Dataset | None = None) -> BPRModel:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        p = self.params
        # implicit checks the BLAS threads in __init__ too, so construct inside the limit
        with threadpool_limits(1, "blas"):
            model = BayesianPersonalizedRanking(
                factors=int(p["factors"]),
                learning_rate=float(p["learning_rate"]),
                regularization=float(p["regularization"]),
                iterations=int(p["iterations"]),
                random_state=p["random_state"],
                num_threads=int(p["num_threads"]),
            )
            model.fit(sp.csr_matrix(train.matrix, dtype=np.float32), show_progress=False)
        self._user_factors = dense_factors(model.user_factors)
        self._item_factors = dense_factors(model.item_factors)
        self.n_items = train.matrix.shape[1]
        return self
