"""Who the pipeline recommends for: request inputs and the prepared user batch.

:func:`prepare_users` turns per-user inputs (ids, context, store state) into arrays the
stages consume: model row, region, the live CF vector (model vector with fold-in of recent
events), the cold-start profile vector, and the items that must never be recommended.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from feature_store.base import StoredEvent
from recsvc.events import DEFAULT_SEEN_EVENTS, hidden_cells, hides_item
from recsvc.pipeline.features import merge_user_features
from recsvc.pipeline.foldin import als_fold_in, fold_in, linear_fold_in
from recsvc.pipeline.model import ServingModel
from recsvc.pipeline.regions import region_row

_NO_EVENTS: tuple[StoredEvent, ...] = ()
_NO_ROWS = np.empty(0, dtype=np.int64)
_NO_KINDS = np.empty(0, dtype=np.int8)


@dataclass(frozen=True, slots=True)
class UserInput:
    """One user's request: context wins over the stored profile, which wins over the
    bundle's training-time features."""

    user_id: str
    region: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)
    profile: Mapping[str, str] = field(default_factory=dict)
    recent_events: Sequence[StoredEvent] = _NO_EVENTS
    exclude_item_ids: Sequence[str] = ()
    categories: Sequence[str] = ()
    include_seen: bool = False
    # Event types whose events hide their item (recsvc.events' seen rule), recent ones and
    # the training history's (a bundle without per-cell kinds hides all of its history);
    # None = the default.
    seen_events: frozenset[str] | None = None


@dataclass
class UserBatch:
    """Arrays over B users, aligned with ``inputs``."""

    inputs: Sequence[UserInput]
    rows: np.ndarray  # [B] int64 model row, -1 = unknown to the model
    regions: np.ndarray  # [B] int64 region row (recsvc.pipeline.regions.region_row)
    vectors: np.ndarray  # [B, d] float32 live CF vector (zeros when not personal)
    personal: np.ndarray  # [B] bool: has a CF vector (known, or folded in from events)
    folded: np.ndarray  # [B] bool: the vector moved with recent events (search, not the list)
    profile_vectors: list[np.ndarray | None]  # hybrid-space vector for cold users
    features: list[dict[str, str]]  # merged features (region included)
    blocked: list[np.ndarray]  # sorted item rows never to recommend (seen, recent, excluded)
    # Training-history items the seen rule leaves visible (all of them with include_seen):
    # the precomputed candidate lists leave the whole history out, so retrieve adds these.
    revealed: list[np.ndarray]
    categories: list[np.ndarray | None]  # allowed category codes, None = any
    anchors: list[tuple[np.ndarray, np.ndarray]]  # recent (item rows, kind): "similar to" reasons

    def __len__(self) -> int:
        return len(self.inputs)


ANCHOR_BOUGHT, ANCHOR_VIEWED, ANCHOR_LIKED = 0, 1, 2
_ANCHOR_OF_EVENT = {"purchase": ANCHOR_BOUGHT, "add_to_cart": ANCHOR_VIEWED, "click": ANCHOR_VIEWED}
MAX_HISTORY_ANCHORS = 20


def _features(model: ServingModel, user: UserInput, row: int) -> dict[str, str]:
    base = {}
    if row >= 0:  # a known user's training-time features
        base = {column: names[codes[row]] for column, codes, names in model.user_feature_codes}
    return merge_user_features(user.profile, user.region, user.attributes, base=base)


def _event_items(model: ServingModel, events: Sequence[StoredEvent]) -> tuple[list[int], list[str]]:
    index = model.bundle.item_index
    rows, kinds = [], []
    for event in events:
        j = index.get(event.item_id)
        if j is not None and event.type != "impression":
            rows.append(j)
            kinds.append(event.type)
    return rows, kinds


def _fold(
    model: ServingModel,
    base: np.ndarray,
    seen_rows: np.ndarray,
    seen_conf: np.ndarray,
    event_rows: np.ndarray,
    weights: np.ndarray,
) -> np.ndarray:
    if model.bundle.user_projection is not None:
        return linear_fold_in(model.bundle.user_projection, base, seen_rows, event_rows, weights)
    if model.als_foldin is not None:
        return als_fold_in(
            model.item_factors, model.als_foldin, seen_rows, seen_conf, event_rows, weights
        )
    return fold_in(model.item_factors, base, event_rows, weights, model.foldin_prior)


def _one_user(model: ServingModel, user: UserInput, cold_vectors: bool) -> tuple:
    bundle = model.bundle
    row = bundle.user_index.get(user.user_id, -1)
    feats = _features(model, user, row)
    region = region_row(model.region_index, feats.get("region", ""))

    seen_rows = seen_weights = hidden_rows = revealed = _NO_ROWS
    seen = DEFAULT_SEEN_EVENTS if user.seen_events is None else user.seen_events
    if row >= 0:
        ui = bundle.user_items
        lo, hi = ui.indptr[row], ui.indptr[row + 1]
        seen_rows, seen_weights = ui.indices[lo:hi].astype(np.int64), ui.data[lo:hi]
        kinds = bundle.user_items_seen_by
        if user.include_seen:
            revealed = seen_rows
        elif kinds is None or model.hides_whole_history(seen):
            hidden_rows = seen_rows
        else:
            hides = hidden_cells(kinds[lo:hi], bundle.user_items_seen_classes, seen)
            hidden_rows, revealed = seen_rows[hides], seen_rows[~hides]

    event_rows, event_kinds = (
        _event_items(model, user.recent_events) if user.recent_events else ([], [])
    )
    vector = bundle.user_factors[row] if row >= 0 else model.zero_vector
    personal, folded = row >= 0, False
    if event_rows:
        weights = np.array([model.event_weights.get(k, 1.0) for k in event_kinds], np.float64)
        if weights.any():
            vector = _fold(model, vector, seen_rows, seen_weights, np.asarray(event_rows), weights)
            personal = folded = True

    parts = []
    if user.exclude_item_ids:
        index = bundle.item_index
        parts.append(
            np.array([j for j in map(index.get, user.exclude_item_ids) if j is not None], np.int64)
        )
    if not user.include_seen:
        parts.append(hidden_rows)
        if event_rows:
            hidden = [
                r for r, k in zip(event_rows, event_kinds, strict=True) if hides_item(k, seen)
            ]
            if hidden:
                parts.append(np.asarray(hidden, dtype=np.int64))
    if not parts:
        blocked = _NO_ROWS
    elif len(parts) == 1 and parts[0] is hidden_rows and model.seen_sorted:
        blocked = hidden_rows  # the usual request: the history (a part of a sorted row)
    else:
        blocked = np.unique(np.concatenate(parts))  # the filters search it: sorted

    categories = None
    if user.categories:
        categories = np.array(
            [model.category_index.get(c, -1) for c in user.categories], dtype=np.int32
        )
    anchors = (_NO_ROWS, _NO_KINDS)
    if event_rows:
        anchors = (
            np.asarray(event_rows, dtype=np.int64),
            np.array([_ANCHOR_OF_EVENT.get(k, ANCHOR_VIEWED) for k in event_kinds], np.int8),
        )

    profile_vec = None
    hybrid_ranks = bundle.cold_start is None  # else the source chosen at training ranks
    if not personal and cold_vectors and model.cold_vector is not None and hybrid_ranks:
        hvec, _ = model.cold_vector(bundle.hybrid, feats)
        hvec = np.asarray(hvec, dtype=np.float32)
        profile_vec = hvec if hvec.any() else None
    return (row, region, vector, personal, profile_vec, feats, blocked, categories, anchors, folded,
            revealed)  # fmt: skip


def prepare_users(
    model: ServingModel, users: Sequence[UserInput], *, cold_vectors: bool = True
) -> UserBatch:
    """Resolve every user against the model; per-user work is a few dict lookups unless
    the user has recent events (then one small ridge solve)."""
    if not users:
        d = model.item_factors.shape[1]
        empty = np.empty(0, np.int64)
        return UserBatch(users, empty, empty, np.zeros((0, d), np.float32),
                         np.empty(0, bool), np.empty(0, bool), [], [], [], [], [], [])  # fmt: skip
    # One column per field of _one_user's tuple.
    (rows, regions, vectors, personal, profile, features, blocked, categories, anchors, folded,
     revealed) = zip(*(_one_user(model, u, cold_vectors) for u in users), strict=True)  # fmt: skip
    return UserBatch(
        inputs=users,
        rows=np.array(rows, dtype=np.int64),
        regions=np.array(regions, dtype=np.int64),
        vectors=np.array(vectors, dtype=np.float32),
        personal=np.array(personal, dtype=bool),
        folded=np.array(folded, dtype=bool),
        profile_vectors=list(profile),
        features=list(features),
        blocked=list(blocked),
        categories=list(categories),
        anchors=list(anchors),
        revealed=list(revealed),
    )
