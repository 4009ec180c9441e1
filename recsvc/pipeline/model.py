"""Per-bundle data the online stages need, derived once at load time.

A :class:`ServingModel` wraps an immutable :class:`~recsvc.bundle.Bundle` with the
lookup tables every call would otherwise rebuild (region masks, popularity orders,
category codes, the item Gram matrix for fold-in). Building it is the expensive part of
a hot swap and happens off the request path; afterwards it is read-only and shared.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsvc.bandit.base import ArtworkPolicy
from recsvc.bandit.registry import AUTO, make_policy, resolve_policy_name
from recsvc.bundle import Bundle, release_pages
from recsvc.bundle.scoring import cold_user_vector, item_variants
from recsvc.errors import UsageError
from recsvc.events import DEFAULT_EVENT_WEIGHTS, hidden_cells
from recsvc.pipeline.foldin import AlsFoldIn
from recsvc.pipeline.regions import availability_table, region_row

# Candidate sources, also the reason of the items they contribute.
SOURCE_PERSONAL = 0  # the user's own (possibly folded-in) CF vector
SOURCE_PROFILE = 1  # cold start: hybrid model from profile/context features
SOURCE_REGION = 2  # cold start: popularity in the user's region
SOURCE_GLOBAL = 3  # last resort: global popularity

# The availability table of every region row costs (R + 2) * I bytes; above this, the
# rows a call needs are built per call (recsvc.pipeline.filters.region_allows).
_MAX_DENSE_MASK_BYTES = 256 << 20

ColdVectorFn = Callable[[Any, Mapping[str, str]], tuple[np.ndarray, float]]


def _pad_rows(rows: list[np.ndarray]) -> np.ndarray:
    width = max((len(r) for r in rows), default=0)
    out = np.full((len(rows), max(width, 1)), -1, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def _top_ids(scores: np.ndarray, n: int) -> np.ndarray:
    n = min(n, scores.shape[0])
    top = np.argpartition(-scores, n - 1)[:n] if n < scores.shape[0] else np.arange(n)
    return top[np.argsort(-scores[top], kind="stable")]


@dataclass
class ServingModel:
    """Read-only view of one bundle, shaped for the pipeline operators."""

    bundle: Bundle
    version: str
    item_id_list: list[str]
    item_factors: np.ndarray  # [I, d] float32
    item_unit: np.ndarray  # [I, d] float32, rows normalized (cosine for reasons)
    foldin_prior: float  # mean squared item-factor norm: scale of the fold-in ridge
    region_index: dict[str, int]
    # [R+2, I] bool, regions.availability_table: row R = unknown region, row R+1 (= -1) =
    # no region; None when too large (rows are then built per call from sold_in).
    availability: np.ndarray | None
    sold_in: sp.csr_matrix  # [R, I] the restricted items each region sells
    cold_candidates: np.ndarray  # [R+1, C] int64, -1 padded; row R = global popularity
    popularity_order: np.ndarray  # [R+1, I] int32 best first; row R = global
    popularity_scores: np.ndarray  # [R+1, I] float32
    # Per-user tables (indexed by model row; for_users restricts them to some users).
    user_regions: np.ndarray  # [U] int64 region row of known users' bundle features
    category_codes: np.ndarray | None  # [I] int32
    category_index: dict[str, int]
    display_names: list[str]  # what a reason calls an item
    event_weights: dict[str, float]
    cold_vector: ColdVectorFn | None
    # Set when the bundle supports the exact ALS fold-in (else the anchored ridge is used).
    als_foldin: AlsFoldIn | None = None
    seen_sorted: bool = False  # user_items rows have sorted indices (no np.unique needed)
    zero_vector: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    policies: dict[str, ArtworkPolicy] = field(default_factory=dict)
    # Parameters per policy name (ServingSettings.bandit_params), applied when it is built.
    policy_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The precomputed candidate scores equal user_factors @ item_factors (checked on a
    # sample at load), so a user without fold-in needs no re-scoring.
    stored_scores_live: bool = False
    # Ranked answers of users known by region only, per (region row, k): they depend on
    # nothing else (see recommend._cold_ranked), so they are per-bundle data.
    cold_ranked: dict[tuple[int, int], Any] = field(default_factory=dict)
    # Candidate lists of the trained cold-start source per (region row, the profile values
    # it reads): a whole-catalog scoring per cold user otherwise (~1 ms at 10k items).
    cold_lists: dict[tuple[int, tuple[str, ...]], Any] = field(default_factory=dict)
    # Per-user (see for_users): bundle.user_features as (column, code per user, names), two
    # list lookups per column instead of a numpy scalar and a str() per call.
    user_feature_codes: list[tuple[str, list[int], list[str]]] = field(default_factory=list)
    # Every precomputed candidate row is stored best first (non-increasing scores), so the
    # top k allowed of a row are its first k allowed (checked at load).
    candidates_sorted: bool = False
    # The distinct kind masks of the bundle's training cells (None: it records no kinds),
    # and per seen setting whether every one of them hides: then a user's whole history
    # hides and no per-cell mask is built (the usual case: the default setting).
    seen_kinds: np.ndarray | None = None
    whole_history_hidden: dict[frozenset[str], bool] = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return len(self.item_id_list)

    @property
    def n_regions(self) -> int:
        return len(self.region_index)

    def policy(self, name: str) -> ArtworkPolicy:
        """The artwork policy ``name`` for this bundle (built once, then cached); ``auto``
        is the policy it stands for with this bundle (one instance under both names)."""
        found = self.policies.get(name)
        if found is None and name == AUTO:
            found = self.policies[name] = self.policy(resolve_policy_name(name, self.bundle))
        if found is None:
            params = self.policy_params.get(name, {})
            try:
                found = make_policy(name, self.bundle, **params)
            except TypeError as exc:  # a parameter the policy does not take
                raise UsageError(f"bandit policy {name!r} parameters {params}: {exc}") from None
            self.policies[name] = found
        return found

    def hides_whole_history(self, seen: frozenset[str]) -> bool:
        """Whether the seen setting ``seen`` hides every training cell of the bundle."""
        if self.seen_kinds is None:
            return True
        found = self.whole_history_hidden.get(seen)
        if found is None:
            mask = hidden_cells(self.seen_kinds, self.bundle.user_items_seen_classes, seen)
            found = self.whole_history_hidden[seen] = bool(mask.all())
        return found

    def for_users(self, bundle: Bundle, rows: np.ndarray) -> ServingModel:
        """This model over ``bundle``, which holds only the users at ``rows`` of this
        model's bundle, renumbered ``0..n-1`` (export's row reader): every per-user table
        follows the rows, everything else is shared."""
        picked = rows.tolist()
        return replace(
            self,
            bundle=bundle,
            user_regions=self.user_regions[rows],
            user_feature_codes=[
                (column, [codes[r] for r in picked], names)
                for column, codes, names in self.user_feature_codes
            ],
        )

    def variants_of(self, item_row: int) -> np.ndarray:
        """The artwork variants of an item, its default first (none without artwork)."""
        art = self.bundle.artwork
        return item_variants(art, item_row) if art is not None else np.empty(0, dtype=str)


def _stored_scores_live(bundle: Bundle, factors: np.ndarray, sample: int = 64) -> bool:
    cands = bundle.candidates
    rows = np.flatnonzero(np.diff(cands.indptr) > 0)
    if not len(rows):
        return False
    for u in rows[:: max(1, len(rows) // sample)][:sample].tolist():
        lo, hi = cands.indptr[u], cands.indptr[u + 1]
        live = factors[cands.indices[lo:hi]] @ bundle.user_factors[u]
        if not np.allclose(live, cands.data[lo:hi], rtol=1e-4, atol=1e-5):
            return False
    return True


def _rows_non_increasing(matrix: sp.csr_matrix, chunk: int = 1 << 22) -> bool:
    """True when every row's data never rises.

    Chunked with chunk-local row starts, so the working set stays a few MiB at 10^8 entries,
    and the pages of a memory-mapped ``data`` (export's lazy load) are dropped after each
    chunk, so the check does not pull the whole candidate file into RSS.
    """
    data, ptr = matrix.data, matrix.indptr
    if len(data) < 2:
        return True
    inner = ptr[1:-1]
    try:
        for lo in range(1, len(data), chunk):
            hi = min(lo + chunk, len(data))
            rises = data[lo:hi] > data[lo - 1 : hi - 1]
            # a rise is allowed where a row begins (offsets in [lo, hi) of indptr)
            first, last = np.searchsorted(inner, [lo, hi])
            rises[inner[first:last] - lo] = False
            if rises.any() or np.isnan(data[lo - 1 : hi]).any():
                return False
            release_pages(data)
    finally:
        release_pages(data)
    return True


def _distinct_kinds(kinds: np.ndarray | None) -> np.ndarray | None:
    """The distinct values of the per-cell kind masks, a block at a time (the array may be
    memory-mapped: export)."""
    if kinds is None:
        return None
    seen = np.zeros(256, dtype=bool)
    for start in range(0, len(kinds), _KIND_BLOCK):
        block = kinds[start : start + _KIND_BLOCK]
        seen |= np.bincount(block, minlength=256) > 0
        release_pages(block)
    return np.flatnonzero(seen).astype(np.uint8)


_KIND_BLOCK = 1 << 24


def _rows_sorted(matrix: sp.csr_matrix) -> bool:
    idx, ptr = matrix.indices, matrix.indptr
    if len(idx) < 2:
        return True
    rises = np.diff(idx) > 0
    row_starts = ptr[1:-1][(ptr[1:-1] > 0) & (ptr[1:-1] < len(idx))]
    rises[row_starts - 1] = True  # a new row may start lower
    return bool(rises.all())


def _als_foldin(bundle: Bundle) -> AlsFoldIn | None:
    model = bundle.manifest.get("model")
    params = model.get("fold_in") if isinstance(model, dict) else None
    if bundle.item_gram is None or not isinstance(params, dict):
        return None
    if params.get("kind", "als") != "als":
        return None
    try:
        b = float(params.get("bm25_b", 0.8))
        item_sums = np.asarray(bundle.user_items.sum(axis=0), dtype=np.float64).ravel()
        return AlsFoldIn(
            gram=np.asarray(bundle.item_gram, dtype=np.float64),
            regularization=float(params["regularization"]),
            alpha=float(params.get("alpha", 1.0)),
            weighting=str(params.get("weighting", "none")),
            k1=float(params.get("bm25_k1", 100.0)),
            b=b,
            item_length_norm=(1.0 - b) + b * item_sums / max(float(item_sums.mean()), 1e-12),
            n_items=len(bundle.item_ids),
        )
    except (KeyError, TypeError, ValueError):
        return None


def build_model(
    bundle: Bundle,
    *,
    cold_candidates: int = 300,
    policy_params: Mapping[str, Mapping[str, Any]] | None = None,
) -> ServingModel:
    """Derive the serving tables of ``bundle`` (seconds for 100k items; call off-path);
    ``policy_params`` are the artwork policies' parameters by policy name."""
    n_items = len(bundle.item_ids)
    regions = [str(r) for r in bundle.region_names]
    region_index = {r: i for i, r in enumerate(regions)}
    factors = np.ascontiguousarray(bundle.item_factors, dtype=np.float32)
    norms = np.linalg.norm(factors, axis=1, keepdims=True)
    unit = factors / np.maximum(norms, 1e-12)

    sold_in = bundle.item_availability.T.tocsr()
    availability = None
    if (len(regions) + 2) * n_items <= _MAX_DENSE_MASK_BYTES:
        availability = availability_table(bundle.available_everywhere, sold_in)

    pop_scores = np.vstack(
        [
            np.asarray(bundle.region_popularity, dtype=np.float32).reshape(len(regions), n_items),
            np.asarray(bundle.popularity, dtype=np.float32)[None, :],
        ]
    )
    order = np.argsort(-pop_scores, axis=1, kind="stable").astype(np.int32)
    rc = bundle.region_candidates.tocsr()
    rows = [rc.indices[rc.indptr[r] : rc.indptr[r + 1]] for r in range(len(regions))]
    rows = [r if len(r) else order[i, :cold_candidates] for i, r in enumerate(rows)]
    rows.append(_top_ids(pop_scores[-1], cold_candidates))

    # Each known user's region row from the bundle's features alone (what audience
    # selects users by; a request's profile or context may move a user elsewhere).
    user_regions = np.full(len(bundle.user_ids), -1, dtype=np.int64)
    if "region" in bundle.user_features and len(bundle.user_ids):
        known = np.asarray(bundle.user_features["region"]).astype(str)
        names, inverse = np.unique(known, return_inverse=True)
        lookup = [region_row(region_index, r) for r in names.tolist()]
        user_regions = np.asarray(lookup, dtype=np.int64)[inverse]

    category_codes, category_index = None, {}
    if "category" in bundle.item_features:
        names, codes = np.unique(
            np.asarray(bundle.item_features["category"]).astype(str), return_inverse=True
        )
        category_codes = codes.astype(np.int32)
        category_index = {str(n): i for i, n in enumerate(names)}

    item_ids = [str(i) for i in bundle.item_ids]
    display = item_ids
    for column in ("title", "name"):
        if column in bundle.item_features:
            display = [
                str(t) or i for t, i in zip(bundle.item_features[column], item_ids, strict=True)
            ]
            break

    # The weights training used (recorded in the manifest), else the shared defaults.
    weights = dict(DEFAULT_EVENT_WEIGHTS)
    params = bundle.manifest.get("params", {}) if isinstance(bundle.manifest, dict) else {}
    configured = params.get("event_weights") if isinstance(params, dict) else None
    if isinstance(configured, dict):
        weights.update({str(k): float(v) for k, v in configured.items()})

    feature_codes = []
    for column, values in bundle.user_features.items():
        names, codes = np.unique(np.asarray(values).astype(str), return_inverse=True)
        feature_codes.append((str(column), codes.ravel().tolist(), names.tolist()))

    return ServingModel(
        stored_scores_live=_stored_scores_live(bundle, factors),
        candidates_sorted=_rows_non_increasing(bundle.candidates),
        user_feature_codes=feature_codes,
        # Built now, off the request path: every request falls back on it.
        policies={"default": make_policy("default", bundle)},
        als_foldin=_als_foldin(bundle),
        seen_sorted=_rows_sorted(bundle.user_items),
        seen_kinds=_distinct_kinds(bundle.user_items_seen_by),
        zero_vector=np.zeros(factors.shape[1], np.float32),
        bundle=bundle,
        version=bundle.version,
        item_id_list=item_ids,
        item_factors=factors,
        item_unit=unit.astype(np.float32),
        foldin_prior=float(np.mean(norms**2)) if n_items else 1.0,
        region_index=region_index,
        availability=availability,
        sold_in=sold_in,
        cold_candidates=_pad_rows(rows),
        popularity_order=order,
        popularity_scores=pop_scores,
        user_regions=user_regions,
        category_codes=category_codes,
        category_index=category_index,
        display_names=display,
        event_weights=weights,
        cold_vector=cold_user_vector if bundle.hybrid is not None else None,
        policy_params={k: dict(v) for k, v in (policy_params or {}).items()},
    )
