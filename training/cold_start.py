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

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
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


# --- profile sources: a user with no history, known by profile features ---------------------

PROFILE_SOURCES = ("popularity", "segments", "embedding", "lightfm")
MAX_VALUES = 1_000  # columns with more distinct values than this are not segmented
PAIR_COLUMNS = 3  # pairs are formed among the best single columns
PRIOR_USERS = (1.0, 10.0, 100.0)  # prior strengths tried, in mean users' worth of interactions
SIGNIFICANCE = 1.64  # a more complex source must beat the incumbent by this many SEs
# Held-out users are capped: 20,000 paired per-user differences give standard errors far
# below the gains that decide a choice, and the scoring cost stops growing with the data.
MAX_HELD_OUT = 20_000
SCORE_CHUNK = 512  # distinct profiles scored at once: bounds the dense [chunk, items] block


@dataclass(frozen=True)
class ProfileSourceChoice:
    """The chosen cold-start source, its arrays, and every candidate's validation score."""

    arrays: Any  # recsvc.bundle.ColdStartArrays
    reason: str
    candidates: dict[str, dict[str, Any]] = field(default_factory=dict)
    held_out_users: int = 0
    k: int = 10

    def to_dict(self) -> dict[str, Any]:
        a = self.arrays
        return {
            "source": a.source,
            "groupings": [list(g) for g in a.groupings],
            "prior_strength": a.prior_strength,
            "reason": self.reason,
            "held_out_users": self.held_out_users,
            f"candidates_ndcg@{self.k}": self.candidates,
        }


def profile_frame(dataset: Dataset, user_ids: np.ndarray) -> pd.DataFrame:
    """[len(user_ids), columns] str profile values ("" = unknown) of the users file."""
    users = dataset.users
    if users is None:
        return pd.DataFrame(index=np.asarray(user_ids).astype(str))
    cols = [c for c in users.columns if c != "user_id"]
    frame = users.drop_duplicates("user_id").set_index(users["user_id"].astype(str))[cols]
    frame = frame.reindex(np.asarray(user_ids).astype(str))
    return frame.astype("string").fillna("").astype(str)


def segment_columns(profiles: pd.DataFrame) -> list[str]:
    """Columns worth segmenting by: 2..MAX_VALUES distinct known values."""
    out = []
    for c in profiles.columns:
        n = profiles[c][profiles[c] != ""].nunique()
        if 2 <= n <= MAX_VALUES:
            out.append(str(c))
    return out


def group_counts(
    x: sp.csr_matrix, profiles: pd.DataFrame, groupings: list[tuple[str, ...]]
) -> tuple[np.ndarray, sp.csr_matrix]:
    """(group keys [G], [G, I] distinct-user counts) for every value of every grouping."""
    binary = sp.csr_matrix(x, dtype=np.float32, copy=True)
    binary.data[:] = 1.0
    keys: list[str] = []
    blocks = []
    for grouping in groupings:
        values = profiles[list(grouping)].to_numpy(dtype=str).reshape(len(profiles), -1)
        known = (values != "").all(axis=1)
        combos, codes = np.unique(values[known], axis=0, return_inverse=True)
        codes = np.asarray(codes).reshape(-1)
        names = [
            "|".join(f"{c}={v}" for c, v in zip(grouping, combo, strict=True))
            for combo in combos.tolist()
        ]
        member = sp.csr_matrix(
            (np.ones(codes.size, np.float32), (codes, np.flatnonzero(known))),
            shape=(len(names), x.shape[0]),
        )
        keys.extend(str(n) for n in names)
        blocks.append(sp.csr_matrix(member @ binary))
    counts = (
        sp.vstack(blocks).tocsr() if blocks else sp.csr_matrix((0, x.shape[1]), dtype=np.float32)
    )
    return np.array(keys, dtype=str), counts.astype(np.float32)


def _segment_arrays(
    x: sp.csr_matrix, profiles: pd.DataFrame, groupings: list[tuple[str, ...]], prior: float
) -> Any:
    from recsvc.bundle import ColdStartArrays

    needed = sorted({(c,) for g in groupings for c in g} | set(groupings), key=len)
    keys, counts = group_counts(x, profiles, needed)
    return ColdStartArrays(
        source="segments",
        prior_strength=prior,
        groupings=tuple(groupings),
        group_keys=keys,
        group_counts=counts,
    )


ScoreRows = Callable[[Sequence[dict[str, str]]], np.ndarray]


def _per_user_ndcg(
    score: ScoreRows,
    rows: Sequence[dict[str, str]],
    inverse: np.ndarray,
    relevant: sp.csr_matrix,
    k: int,
) -> np.ndarray:
    """NDCG@k of each held-out user: ``score`` maps distinct profiles to [n, items] scores
    (called on ``SCORE_CHUNK`` of them at a time), ``inverse`` gives each user's profile."""
    from training.metrics import per_user_ndcg

    tops = [
        np.argsort(-score(rows[s : s + SCORE_CHUNK]), axis=1, kind="stable")[:, :k]
        for s in range(0, len(rows), SCORE_CHUNK)
    ]
    top = np.vstack(tops) if tops else np.zeros((0, k), dtype=np.int64)
    return np.asarray(per_user_ndcg(top[inverse], relevant, k), dtype=np.float64)


def choose_profile_source(
    dataset: Dataset,
    matrix: InteractionMatrix,
    *,
    embedding_fit: Any = None,
    hybrid_params: dict[str, Any] | None = None,
    fraction: float = 0.2,
    seed: int = 0,
    k: int = 10,
    max_held_out: int = MAX_HELD_OUT,
    progress: Any = None,
) -> ProfileSourceChoice:
    """Hold out a seeded ``fraction`` (at most ``max_held_out``) of whole users with a
    profile, fit every source on the rest and rank the held-out users' items from their
    profile alone (NDCG@k per user).

    Candidates, simplest first: global popularity; popularity within each profile column
    (values shrunk toward global, prior strength chosen among ``PRIOR_USERS``); within
    pairs of the best columns (shrunk toward their columns); the log-linear sum of every
    column that helped; a ridge map from features into the CF space (``embedding_fit``:
    fits the shipped model on a matrix and returns its user factors, item factors); the
    LightFM hybrid (``hybrid_params``). A source replaces the incumbent only when its
    mean per-user gain exceeds ``SIGNIFICANCE`` standard errors, so ties go to the simpler
    and nothing worse than global popularity on validation ships. The winner is refitted
    on every user.
    """
    from recsvc.bundle import ColdStartArrays
    from recsvc.bundle.scoring import embedding_vector

    x = sp.csr_matrix(matrix.matrix)
    profiles = profile_frame(dataset, matrix.user_ids)
    columns = segment_columns(profiles)
    popular = ColdStartArrays(source="popularity")
    with_profile = (
        np.flatnonzero((profiles != "").any(axis=1).to_numpy())
        if len(profiles.columns)
        else np.array([], int)
    )
    n_held = min(round(fraction * with_profile.size), max_held_out)
    if (not columns and hybrid_params is None) or n_held < 10:
        return ProfileSourceChoice(popular, "no usable profile columns or too few users", k=k)
    rng = np.random.default_rng(seed)
    held = np.zeros(x.shape[0], dtype=bool)
    held[rng.choice(with_profile, size=n_held, replace=False)] = True
    held &= np.diff(x.indptr) > 0
    fit_x = x[~held]
    fit_profiles = profiles.iloc[np.flatnonzero(~held)]
    test_profiles = profiles.iloc[np.flatnonzero(held)]
    relevant = x[held]
    pop = np.asarray(fit_x.getnnz(axis=0), dtype=np.float64)
    activity = fit_x.nnz / max(1, int((np.diff(fit_x.indptr) > 0).sum()))
    # Every source scores from the profile alone, so users sharing a profile share a
    # ranking: score each distinct held-out profile once (a few hundred rows, not the
    # thousands of held-out users) and hand each user its profile's top k.
    distinct, inverse = np.unique(test_profiles.to_numpy(dtype=str), axis=0, return_inverse=True)
    inverse = np.asarray(inverse).reshape(-1)
    names = [str(c) for c in test_profiles.columns]
    rows = [dict(zip(names, values, strict=True)) for values in distinct.tolist()]

    def per_user_ndcg(score: ScoreRows) -> np.ndarray:
        return _per_user_ndcg(score, rows, inverse, relevant, k)

    per_user: dict[str, np.ndarray] = {}
    meta: dict[str, dict[str, Any]] = {}

    def say(line: str) -> None:
        if progress is not None:
            progress(line)

    def record(name: str, score: ScoreRows, info: dict[str, Any]) -> None:
        per_user[name] = per_user_ndcg(score)
        meta[name] = {"ndcg": round(float(per_user[name].mean()), 5), **info}
        say(f"cold start {name}: ndcg@{k}={meta[name]['ndcg']:.4f}")

    record("popularity", lambda chunk: np.tile(pop, (len(chunk), 1)), {"source": "popularity"})

    def segments(groupings: list[tuple[str, ...]]) -> tuple[np.ndarray, float]:
        best: tuple[np.ndarray, float] | None = None
        counted = _segment_arrays(fit_x, fit_profiles, groupings, 0.0)
        for users in PRIOR_USERS:
            prior = float(users * activity)
            value = per_user_ndcg(
                functools.partial(
                    _segment_rows, dataclasses.replace(counted, prior_strength=prior), pop
                )
            )
            if best is None or value.mean() > best[0].mean():
                best = (value, prior)
        assert best is not None
        return best

    singles: dict[str, float] = {}
    for c in columns:
        value, prior = segments([(c,)])
        name = f"segments:{c}"
        per_user[name] = value
        meta[name] = {
            "ndcg": round(float(value.mean()), 5),
            "source": "segments",
            "groupings": [[c]],
            "prior_strength": prior,
        }
        singles[c] = float(value.mean())
        say(f"cold start {name}: ndcg@{k}={value.mean():.4f}")
    # A column helps when its paired per-user gain over global popularity exceeds one
    # standard error: a pure-noise column scores a hair above popularity about half the
    # time and, summed in, costs more than it gave (MovieLens profile check,
    # docs/benchmarks/quality.md).
    helpful = [
        c
        for c in sorted(singles, key=lambda c: -singles[c])
        if _gain_over(per_user[f"segments:{c}"], per_user["popularity"], 1.0)
    ]
    top = helpful[:PAIR_COLUMNS]
    for i, a in enumerate(top):
        for b in top[i + 1 :]:
            value, prior = segments([(a, b)])
            name = f"segments:{a}|{b}"
            per_user[name] = value
            meta[name] = {
                "ndcg": round(float(value.mean()), 5),
                "source": "segments",
                "groupings": [[a, b]],
                "prior_strength": prior,
            }
            say(f"cold start {name}: ndcg@{k}={value.mean():.4f}")
    if len(helpful) > 1:
        value, prior = segments([(c,) for c in helpful])
        name = "segments:" + "+".join(helpful)
        per_user[name] = value
        meta[name] = {
            "ndcg": round(float(value.mean()), 5),
            "source": "segments",
            "groupings": [[c] for c in helpful],
            "prior_strength": prior,
        }
        say(f"cold start {name}: ndcg@{k}={value.mean():.4f}")
    if embedding_fit is not None and columns:
        fit_matrix = InteractionMatrix(matrix.user_ids[~held], matrix.item_ids, fit_x)
        user_factors, item_factors = embedding_fit(fit_matrix)
        arrays = fit_embedding(fit_profiles, columns, user_factors, np.diff(fit_x.indptr) > 0)
        record(
            "embedding",
            lambda chunk: np.vstack([item_factors @ embedding_vector(arrays, r) for r in chunk]),
            {"source": "embedding"},
        )
    if hybrid_params is not None:
        from recsvc.bundle.scoring import cold_user_scores
        from training.models.hybrid import LightFMHybrid

        fit_matrix = InteractionMatrix(matrix.user_ids[~held], matrix.item_ids, fit_x)
        model = LightFMHybrid(**hybrid_params).fit(fit_matrix, dataset)
        h = model.to_arrays(matrix.item_ids, dataset.items)
        record(
            "lightfm",
            lambda chunk: np.vstack(
                [cold_user_scores(h, {c: v for c, v in r.items() if v}) for r in chunk]
            ),
            {"source": "lightfm"},
        )
    best = "popularity"
    for name in per_user:  # simplest first (insertion order)
        diff = per_user[name] - per_user[best]
        se = float(diff.std(ddof=1) / np.sqrt(diff.size)) if diff.size > 1 else 0.0
        if float(diff.mean()) > SIGNIFICANCE * se and float(diff.mean()) > 0:
            best = name
    chosen = meta[best]
    reason = (
        f"{best} has held-out NDCG@{k} {chosen['ndcg']:.4f} vs global popularity "
        f"{meta['popularity']['ndcg']:.4f} on {int(held.sum())} held-out whole users "
        f"(profile only); candidates tried simplest first, each must beat the incumbent by "
        f"more than {SIGNIFICANCE} standard errors of the paired per-user differences"
    )
    if chosen["source"] == "segments":
        groupings = [tuple(g) for g in chosen["groupings"]]
        arrays = _segment_arrays(x, profiles, groupings, float(chosen["prior_strength"]))
    elif chosen["source"] == "embedding" and embedding_fit is not None:
        user_factors, _ = embedding_fit(matrix)
        arrays = fit_embedding(profiles, columns, user_factors, np.diff(x.indptr) > 0)
    elif chosen["source"] == "lightfm":
        arrays = ColdStartArrays(source="lightfm")
    else:
        arrays = popular
    return ProfileSourceChoice(arrays, reason, meta, int(held.sum()), k)


def _segment_rows(arrays: Any, pop: np.ndarray, rows: Sequence[dict[str, str]]) -> np.ndarray:
    from recsvc.bundle.scoring import segment_scores

    return np.vstack([segment_scores(arrays, pop, r) for r in rows])


def _gain_over(values: np.ndarray, base: np.ndarray, ses: float) -> bool:
    """Whether the mean paired gain of ``values`` over ``base`` exceeds ``ses`` standard
    errors (and is positive)."""
    diff = np.asarray(values) - np.asarray(base)
    se = float(diff.std(ddof=1) / np.sqrt(diff.size)) if diff.size > 1 else 0.0
    return float(diff.mean()) > max(ses * se, 0.0)


def fit_embedding(
    profiles: pd.DataFrame,
    columns: list[str],
    user_factors: np.ndarray,
    active: np.ndarray,
    ridge: float = 1.0,
) -> Any:
    """Ridge map from one-hot ``column=value`` features to the users' CF vectors."""
    from recsvc.bundle import ColdStartArrays

    names: list[str] = []
    rows: list[int] = []
    cols: list[int] = []
    index: dict[str, int] = {}
    for c in columns:
        values = profiles[c].to_numpy(dtype=str)
        for u in np.flatnonzero(values != ""):
            key = f"{c}={values[u]}"
            if key not in index:
                index[key] = len(names)
                names.append(key)
            rows.append(int(u))
            cols.append(index[key])
    f = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(profiles), len(names)))
    f = f[active]
    y = np.asarray(user_factors, dtype=np.float64)[active]
    intercept = y.mean(axis=0)
    centred = y - intercept
    gram = (f.T @ f).toarray() + ridge * np.eye(len(names))
    weights = np.linalg.solve(gram, np.asarray(f.T @ centred))
    return ColdStartArrays(
        source="embedding",
        feature_names=np.array(names, dtype=str),
        feature_weights=weights.astype(np.float32),
        intercept=intercept.astype(np.float32),
    )
