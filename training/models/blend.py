"""ease-lowrank blended with a linear read-out of ALS, as one linear embedding model.

Score: ``w * s_ease / c_ease + (1 - w) * s_als / c_als``, where ``s_ease = x_u P_e V_e^T``
is ease-lowrank's score and ``s_als = x_u P_a Y^T`` is ALS's item factors ``Y`` read out
linearly: the user vector is the ridge solution ``x_u Y (Y^T Y + s * reg I)^-1`` (ALS's
user step without its per-user confidence term; on MovieLens' validation folds it scored
higher than ALS's own user factors, alone and blended). ``c`` is one global scale per
model: the mean over (a sample of) training users of their mean top-10 unseen score.

Both parts are linear in the binary seen row ``x_u``, so the blend is one embedding model
``x_u @ projection @ items^T`` with ``projection = [sqrt(w/c_e) P_e, sqrt((1-w)/c_a) P_a]``
and ``items = [sqrt(w/c_e) V_e, sqrt((1-w)/c_a) Y]``: it ships through FAISS like
ease-lowrank and a new interaction folds in exactly by adding its row of ``projection``
(serving's linear fold-in). ``popularity_exponent`` scales the blended score of item i by
``(n_i + 1) ** exponent`` (``training.models.linear``). Chosen in the validation sweeps of
docs/benchmarks/quality-sweeps/blend-2026-11/ (test split never scored there).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from training.errors import TrainingError
from training.models.als import ALSModel
from training.models.base import top_n
from training.models.ease import EASELowRankModel
from training.models.linear import LinearEmbeddingModel, binary_rows, popularity_scale

if TYPE_CHECKING:
    from training.data import Dataset, InteractionMatrix

BLEND_DEFAULTS: dict[str, Any] = {
    "w_ease": 0.5,  # weight of ease-lowrank's normalized score
    "linear_reg_scale": 1.0,  # ridge of the ALS read-out, in units of ALS regularization
    "ease_params": {},  # ease-lowrank parameters (its defaults underneath)
    "als_params": {},  # ALS parameters (its defaults underneath)
    "scale_users": 1_000,  # users sampled for the score scales
    "popularity_exponent": 0.0,  # blended item scores x (n_i + 1) ** this (models.linear)
    "random_state": 42,
}


class EASEALSBlendModel(LinearEmbeddingModel):
    """ease-lowrank + linear ALS read-out, blended by normalized score (module doc)."""

    name = "ease-als"

    def __init__(self, **params: Any) -> None:
        merged = {**BLEND_DEFAULTS, **params}
        unknown = set(merged) - set(BLEND_DEFAULTS)
        if unknown:
            raise TrainingError(f"unknown ease-als parameter(s): {', '.join(sorted(unknown))}")
        super().__init__(**merged)

    def fit(self, train: InteractionMatrix, dataset: Dataset | None = None) -> EASEALSBlendModel:
        ease = self.fit_parts(train, dataset)
        return self.combine(*ease, x=binary_rows(train.matrix))

    def fit_parts(
        self, train: InteractionMatrix, dataset: Dataset | None = None
    ) -> tuple[EASELowRankModel, ALSModel]:
        """The two fitted parts (a validation grid over ``w_ease`` reuses one fit)."""
        seed = int(self.params["random_state"])
        ease = EASELowRankModel(**{"random_state": seed, **self.params["ease_params"]})
        als = ALSModel(**{"random_state": seed, **self.params["als_params"]})
        return ease.fit(train, dataset), als.fit(train, dataset)

    def normalized_parts(
        self, ease: EASELowRankModel, als: ALSModel, x: sp.csr_matrix
    ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """ease-lowrank's and the ALS read-out's (projection, items), each divided by the
        square root of its global score scale. They do not depend on ``w_ease``: a grid over
        the weight computes them once per fit (``combine(..., normalized=...)``)."""
        if float(self.params["linear_reg_scale"]) <= 0:
            raise TrainingError(
                f"ease-als needs linear_reg_scale > 0 (got {self.params['linear_reg_scale']})"
            )
        if ease.projection is None or ease.item_factors is None or als.item_factors is None:
            raise TrainingError("ease-als: both parts must be fitted")
        y = als.item_factors.astype(np.float64)
        ridge = float(self.params["linear_reg_scale"]) * float(als.params["regularization"])
        als_projection = np.linalg.solve(y.T @ y + ridge * np.eye(y.shape[1]), y.T).T
        sample = _scale_sample(x, int(self.params["scale_users"]), int(self.params["random_state"]))
        ease_part = (ease.projection.astype(np.float64), ease.item_factors.astype(np.float64))
        out = []
        for projection, factors in (ease_part, (als_projection, y)):
            scale = np.sqrt(1.0 / _top10_scale(x[sample], projection, factors))
            out.append((projection * scale, factors * scale))
        return out[0], out[1]

    def combine(
        self,
        ease: EASELowRankModel,
        als: ALSModel,
        x: sp.csr_matrix,
        normalized: tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
        | None = None,
    ) -> EASEALSBlendModel:
        """Set this model's embeddings from fitted parts and the binary training rows
        (``normalized``: :meth:`normalized_parts` of the same parts, when already computed)."""
        w = float(self.params["w_ease"])
        if not 0.0 <= w <= 1.0:
            raise TrainingError(f"ease-als needs 0 <= w_ease <= 1 (got {w})")
        parts = normalized if normalized is not None else self.normalized_parts(ease, als, x)
        weights = (np.sqrt(w), np.sqrt(1.0 - w))
        projection = np.hstack([p * c for (p, _), c in zip(parts, weights, strict=True)])
        items = np.hstack([i * c for (_, i), c in zip(parts, weights, strict=True)])
        items *= popularity_scale(x, float(self.params["popularity_exponent"]))[:, None]
        projection = np.ascontiguousarray(projection, dtype=np.float32)
        self._set(projection, items, x @ projection)
        self.n_items = x.shape[1]
        return self


def _scale_sample(x: sp.csr_matrix, n: int, seed: int) -> np.ndarray:
    """Up to ``n`` users with at least one interaction (seeded), sorted."""
    active = np.flatnonzero(np.diff(x.indptr) > 0)
    if active.size > n:
        active = np.sort(np.random.default_rng(seed).choice(active, n, replace=False))
    return active


def _top10_scale(x: sp.csr_matrix, projection: np.ndarray, items: np.ndarray) -> float:
    """Mean over the rows of ``x`` of their mean top-10 unseen score (> 0)."""
    if x.shape[0] == 0:
        return 1.0
    user_vectors = np.asarray(x @ projection, dtype=np.float32)
    scores = user_vectors @ items.astype(np.float32).T
    r, c = x.nonzero()
    scores[r, c] = -np.inf
    _, top = top_n(scores, 10)
    value = float(np.mean(top[np.isfinite(top)])) if np.isfinite(top).any() else 0.0
    return value if value > 1e-12 else 1.0
