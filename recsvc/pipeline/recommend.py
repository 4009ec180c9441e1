"""The stages composed: users -> retrieve -> filter -> top-k -> fallback -> reasons.

Serving calls :func:`rank_users` with one user, export with thousands; both get the same
answers for the same inputs (artwork is added by the caller through
:func:`recsvc.pipeline.artwork.choose_artwork`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from recsvc.bundle.scoring import profile_known
from recsvc.pipeline.filters import allowed_mask
from recsvc.pipeline.model import SOURCE_PERSONAL, SOURCE_PROFILE, ServingModel
from recsvc.pipeline.order import Ranked, fill_short, listed_top_k, top_k
from recsvc.pipeline.reasons import reasons_for, row_source
from recsvc.pipeline.regions import popularity_rows
from recsvc.pipeline.retrieve import retrieve
from recsvc.pipeline.users import UserBatch, UserInput, prepare_users


@dataclass
class Recommendation:
    """One user's ordered list (no artwork yet)."""

    user_id: str
    item_ids: list[str]
    scores: list[float]
    reasons: list[str]
    source: str  # personal | profile | region | global | empty


def rank_users(
    model: ServingModel,
    users: Sequence[UserInput],
    k: int,
    *,
    cold_vectors: bool = True,
) -> tuple[UserBatch, Ranked, int]:
    """Top-k item rows per user under every business rule; also the fallback count."""
    batch = prepare_users(model, users, cold_vectors=cold_vectors)
    if len(batch) == 1:
        listed = listed_top_k(model, batch, k)
        if listed is not None:
            return batch, listed, 0
        if _region_only(model, batch):
            ranked, fallbacks = _cold_ranked(model, batch, k)
            return batch, ranked, fallbacks
    ranked, fallbacks = _rank(model, batch, k)
    return batch, ranked, fallbacks


def _rank(model: ServingModel, batch: UserBatch, k: int) -> tuple[Ranked, int]:
    cands = retrieve(model, batch)
    users_idx = np.arange(len(batch))
    ranked = top_k(cands, allowed_mask(model, batch, users_idx, cands.items), k)
    return ranked, fill_short(model, batch, ranked, k)


def _region_only(model: ServingModel, batch: UserBatch) -> bool:
    """A user the model does not know, without recent events, profile vector, features the
    trained cold-start source knows, exclusions or categories: the answer depends on the
    region and k alone."""
    return (
        not batch.personal[0]
        and batch.profile_vectors[0] is None
        and not profile_known(model.bundle, batch.features[0])
        and not len(batch.blocked[0])
        and batch.categories[0] is None
    )


_MAX_COLD_RANKED = 4096


def _cold_ranked(model: ServingModel, batch: UserBatch, k: int) -> tuple[Ranked, int]:
    """``_rank`` of a region-only user, computed once per (region, k) and bundle; the
    arrays are read-only (every caller gets the same ones)."""
    key = (int(batch.regions[0]), k)
    found = model.cold_ranked.get(key)
    if found is None:
        ranked, fallbacks = _rank(model, batch, k)
        for array in (ranked.items, ranked.scores, ranked.sources, ranked.counts):
            array.flags.writeable = False
        if len(model.cold_ranked) >= _MAX_COLD_RANKED:
            model.cold_ranked.clear()
        found = model.cold_ranked[key] = (ranked, fallbacks)
    return found  # type: ignore[no-any-return]


def to_recommendations(
    model: ServingModel, batch: UserBatch, ranked: Ranked
) -> list[Recommendation]:
    out = []
    ids = model.item_id_list
    for u in range(len(batch)):
        n = int(ranked.counts[u])
        out.append(
            Recommendation(
                user_id=batch.inputs[u].user_id,
                item_ids=list(map(ids.__getitem__, ranked.items[u, :n].tolist())),
                scores=ranked.scores[u, :n].tolist(),
                reasons=reasons_for(model, batch, ranked, u),
                source=row_source(ranked, u),
            )
        )
    return out


def recommend(
    model: ServingModel, users: Sequence[UserInput], k: int, *, cold_vectors: bool = True
) -> list[Recommendation]:
    """Ordered recommendations for each user (batch-capable; see module docstring)."""
    batch, ranked, _ = rank_users(model, users, k, cold_vectors=cold_vectors)
    return to_recommendations(model, batch, ranked)


def score_items(model: ServingModel, user: UserInput, item_rows: np.ndarray) -> np.ndarray:
    """Scores of ``item_rows`` for ``user`` on the scale its recommendations use."""
    batch = prepare_users(model, [user])
    if batch.personal[0]:
        return model.item_factors[item_rows] @ batch.vectors[0]
    vec, hybrid = batch.profile_vectors[0], model.bundle.hybrid
    if vec is not None and hybrid is not None:
        return hybrid.item_representations[item_rows] @ vec + hybrid.item_biases[item_rows]
    table_row = int(popularity_rows(batch.regions[0], model.n_regions))
    return model.popularity_scores[table_row, item_rows]


__all__ = [
    "SOURCE_PERSONAL",
    "SOURCE_PROFILE",
    "Recommendation",
    "rank_users",
    "recommend",
    "score_items",
    "to_recommendations",
]
