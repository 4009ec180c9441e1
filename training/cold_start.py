"""Candidate lists for users known only by their region (cold start), source chosen on data.

Two sources can rank a region's catalog: regional popularity (shrunk toward global) and the
LightFM hybrid scoring a user whose only feature is ``region=R``. Which is better depends on
the data, so the job holds out a seeded share of whole users, refits both on the rest, and
ranks the held-out users' interactions with their region's list (NDCG@k, items unavailable
in the region removed). The winner's scores — from the models fitted on everyone — become
``region_candidates``. Above ``max_nnz`` interactions the extra hybrid fit is skipped and
popularity is used (recorded as such).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsvc.bundle import HybridArrays
from training.data import Dataset, InteractionMatrix
from training.metrics import ranking_metrics
from training.models.popularity import shrunk_region_popularity

SOURCES = ("region_popularity", "lightfm")


@dataclass(frozen=True)
class RegionSourceChoice:
    source: str  # one of SOURCES
    reason: str
    ndcg: dict[str, float] = field(default_factory=dict)  # per source, held-out users
    k: int = 10
    held_out_users: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "reason": self.reason,
            f"ndcg@{self.k}": self.ndcg,
            "held_out_users": self.held_out_users,
        }


def hybrid_region_scores(hybrid: HybridArrays, regions: np.ndarray) -> np.ndarray:
    """[R, I] hybrid scores of a user whose only feature is ``region=R``."""
    from recsvc.bundle.scoring import cold_user_scores

    n_items = hybrid.item_representations.shape[0]
    if len(regions) == 0:
        return np.zeros((0, n_items), dtype=np.float32)
    return np.vstack([cold_user_scores(hybrid, {"region": str(r)}) for r in regions]).astype(
        np.float32
    )


def choose_region_source(
    dataset: Dataset,
    matrix: InteractionMatrix,
    region_names: np.ndarray,
    user_region: np.ndarray,
    allowed: np.ndarray,
    hybrid_params: dict[str, Any],
    *,
    prior_strength: float,
    fraction: float = 0.2,
    max_nnz: int = 2_000_000,
    seed: int = 0,
    k: int = 10,
) -> RegionSourceChoice:
    """Compare both sources on held-out users of known region (module docstring)."""
    x = sp.csr_matrix(matrix.matrix)
    if x.nnz > max_nnz:
        return RegionSourceChoice(
            "region_popularity",
            f"{x.nnz:,} interactions > {max_nnz:,}: hybrid validation skipped (cost)",
            k=k,
        )
    rng = np.random.default_rng(seed)
    with_region = np.flatnonzero(user_region >= 0)
    n_held = round(fraction * len(with_region))
    if n_held < 10:
        return RegionSourceChoice(
            "region_popularity", "too few users with a region to validate", k=k
        )
    held = np.zeros(len(user_region), dtype=bool)
    held[rng.choice(with_region, size=n_held, replace=False)] = True
    n_regions = allowed.shape[0]
    train = InteractionMatrix(matrix.user_ids[~held], matrix.item_ids, x[~held])
    pop = shrunk_region_popularity(train.matrix, user_region[~held], n_regions, prior_strength)

    from training.models.hybrid import LightFMHybrid

    model = LightFMHybrid(**hybrid_params).fit(train, dataset)
    regions = np.asarray(sorted({int(r) for r in user_region[held]}))
    hybrid_scores = np.zeros((n_regions, x.shape[1]), dtype=np.float32)
    hybrid_arrays = model.to_arrays(matrix.item_ids, dataset.items)
    hybrid_scores[regions] = hybrid_region_scores(hybrid_arrays, region_names[regions])
    relevant = x[held]
    ndcg = {
        "region_popularity": _ndcg(pop, allowed, user_region[held], relevant, k),
        "lightfm": _ndcg(hybrid_scores, allowed, user_region[held], relevant, k),
    }
    best = max(SOURCES, key=lambda s: (ndcg[s], s == "region_popularity"))
    reason = (
        f"held-out NDCG@{k} of {n_held} users: region_popularity "
        f"{ndcg['region_popularity']:.4f} vs lightfm {ndcg['lightfm']:.4f}"
    )
    return RegionSourceChoice(best, reason, ndcg, k, n_held)


def _ndcg(
    scores: np.ndarray,
    allowed: np.ndarray,
    regions: np.ndarray,
    relevant: sp.csr_matrix,
    k: int,
) -> float:
    masked = np.where(allowed, scores, -np.inf)
    top = np.argsort(-masked, axis=1, kind="stable")[:, :k]
    top = np.where(np.take_along_axis(masked, top, axis=1) > -np.inf, top, -1)
    return round(ranking_metrics(top[regions], relevant, k).ndcg, 5)
