"""Contextual linear Thompson sampling: user context × variant theme, plus item effects.

Model. A user is a feature vector ``u`` (dimension ``D`` ≤ ~32): a bias, the user's taste
(``taste_dims`` values, below), and one-hot values of ``context_features``. The click
probability of variant ``v``
with theme ``t`` of item ``i`` is modelled as ``u·θ_t + δ_iv``: one ridge regression per theme
(so a comedy-themed image can win for comedy lovers and lose for others, and a new item with
known themes is personalized from its first impression) and a shrunk per-(item, variant)
offset for effects the themes do not explain.

Features used (documented per policy, ISSUE 14):

* ``context_features`` (default: ``region`` and the bundle's other user-feature columns, at
  most 4 columns) read from the merged context, where the request's region and attributes
  win over the stored profile (:func:`recsvc.pipeline.features.merge_user_features`). A
  column's vocabulary is its ``max_values`` most frequent values in the bundle (for
  ``region`` also the bundle's region names: the stores a shopper may stand in), sorted
  by name; a value outside it has no one-hot (the policy then knows only the rest).
* taste: the user's CF vector (the bundle's for a known user, the request's live fold-in
  vector otherwise) scored against the mean item vector of each of the ``taste_dims``
  largest groups of one categorical item column (standardized over users): ``category``
  when the bundle has it, else the item column whose largest groups cover the most items
  (:func:`taste_column`; brand, genre, department…). What "likes comedy" means does not
  depend on the embedding space, so the statistics survive a retrain. A bundle with no
  usable item column falls back to the top principal directions of the user factors,
  which are specific to that bundle: then the space (and so the state) is per version.

State (feature-store counter hashes, shared by replicas, updated atomically by events):

* ``<prefix>:<space>:theme:<theme>`` - ``A:i:j`` (i ≤ j) = Σ u_i u_j over impressions,
  ``b:i`` = Σ u_i over clicks, ``n`` impressions. Posterior: θ_t ~ N(A⁻¹b, σ² A⁻¹) with
  ``A`` = ridge·I + the sums. D(D+1)/2 + 1 fields move per impression (153 for D = 17).
* ``<prefix>:<space>:item:<item_id>`` - ``<variant>:n``, ``<variant>:c`` and ``<variant>:r``,
  the residual sum Σ(click - u·θ̂_t) with θ̂ the posterior mean the replica had when it
  recorded the event (backfitting: cheap, and exact once θ̂ settles).

``<space>`` names the feature space: the taste basis (category names, or the bundle version
for the principal-direction fallback) and a fingerprint of the feature settings and
vocabularies. It is not the bundle version: a retrain with the same categories and
vocabularies keeps learning in the same hashes. Items and variants that disappear are no
longer read; new ones start from the prior (offset 0 under the shared theme posteriors).

Credit: the taste values and context values used for a choice are recorded with the
exposure (:meth:`LinearThompsonPolicy.exposure_context`); its impressions and clicks move
the statistics of exactly that ``u`` (:meth:`LinearThompsonPolicy.context_from_exposure`).

Serving cost: the per-theme posteriors (Cholesky-free: a D×D inverse per theme) are cached
in-process and re-read from the store at most every ``refresh_ms``; between refreshes
:meth:`counter_keys` asks only for the item hashes. Per request the user's score under
theme ``t`` is the 1-D Gaussian ``N(u·μ_t, σ² uᵀA⁻¹u)``, so the Monte Carlo propensity needs
``n_samples × (themes + variants)`` normal draws, not D-dimensional ones. The served variant is
drawn from the Monte Carlo distribution, so its logged propensity is exact whatever
``n_samples`` is. Fewer draws make the policy more random and, without a floor, leave more
variants out of a call's support (64 by default; 32 measured worse, see the benchmark).
"""

from __future__ import annotations

import math
import random
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from feature_store.base import CounterDelta, StoredEvent
from recsvc.bandit.base import TASTE_KEY, ArtworkContext, ArtworkDecision, ArtworkPolicy
from recsvc.bandit.thompson import EXPLORE_SHARE, IMPRESSION_EVENT, REWARD_EVENT, context_value
from recsvc.bandit.variants import (
    NEG_INF,
    Cells,
    NormalPool,
    VariantIndex,
    compiled_kernel,
    decisions,
    delta,
    floors,
    gaussian_wins,
    greedy,
    new_cells,
    probabilities,
    serve,
    uniforms,
)
from recsvc.bundle import ArtworkCatalog, Bundle
from recsvc.errors import UsageError


@dataclass(frozen=True)
class UserFeatureMap:
    """Turns an ArtworkContext into the vector ``u``."""

    user_factors: np.ndarray | None  # [U, d]
    user_index: Mapping[str, int]
    center: np.ndarray  # [d]
    projection: np.ndarray  # [d, k] (already divided by the per-direction std)
    context_features: tuple[str, ...]
    vocab: tuple[tuple[str, ...], ...]  # per context feature: values with a one-hot slot
    # What the taste dimensions mean: "cat:<names>" (category affinities, stable across
    # retrains) or "pca:<version>" (principal directions of one bundle's user factors).
    space: str = "pca"

    @property
    def taste_dims(self) -> int:
        return int(self.projection.shape[1])

    @property
    def dim(self) -> int:
        return 1 + self.projection.shape[1] + sum(len(v) for v in self.vocab)

    def taste(self, ctx: ArtworkContext) -> np.ndarray | None:
        """The shipped CF vector of a known user, else the live one from the request.

        The live vector (fold-in of recent events) moves with every click; the bandit's
        statistics are sums over a user's impressions and need a stable description of
        taste, in the space the projection was fitted on. A user the bundle does not know
        has only the live vector (or none: cold start).
        """
        row = self.user_index.get(ctx.user_id)
        if row is not None and self.user_factors is not None:
            return np.asarray(self.user_factors[row], dtype=np.float64)
        if ctx.user_vector is not None:
            return np.asarray(ctx.user_vector, dtype=np.float64)
        return None

    def projected(self) -> np.ndarray:
        """[U, k] projected taste of every shipped user (the taste part of :meth:`vector`)."""
        k = self.projection.shape[1]
        if self.user_factors is None or not k:
            return np.zeros((0, k))
        return (np.asarray(self.user_factors, np.float64) - self.center) @ self.projection

    def one_hots(self, ctx: ArtworkContext) -> list[int]:
        """Positions in ``u`` of the context one-hot values that are set."""
        out, pos = [], 1 + self.projection.shape[1]
        for name, values in zip(self.context_features, self.vocab, strict=True):
            value = context_value(ctx, name)
            if value in values:
                out.append(pos + values.index(value))
            pos += len(values)
        return out

    def vector(self, ctx: ArtworkContext) -> np.ndarray:
        u = np.zeros(self.dim)
        u[0] = 1.0
        k = self.projection.shape[1]
        if ctx.taste is not None:  # recorded with the exposure: exactly what was used
            recorded = list(ctx.taste[:k])
            u[1 : 1 + len(recorded)] = recorded
            u[self.one_hots(ctx)] = 1.0
            return u
        vec = self.taste(ctx)
        # Unknown user (cold start): zero taste, context one-hots still apply.
        if k and vec is not None and vec.shape == self.center.shape:
            u[1 : 1 + k] = (vec - self.center) @ self.projection
        u[self.one_hots(ctx)] = 1.0
        return u


def build_feature_map(
    user_factors: np.ndarray | None,
    user_index: Mapping[str, int],
    user_features: Mapping[str, np.ndarray],
    *,
    taste_dims: int = 8,
    context_features: Sequence[str] = ("region", "segment"),
    max_values: int = 4,
    item_factors: np.ndarray | None = None,
    item_categories: np.ndarray | None = None,
    extra_values: Mapping[str, Sequence[str]] | None = None,
    version: str = "",
) -> UserFeatureMap:
    """Taste directions (category affinities when ``item_factors`` and ``item_categories``
    are given and hold >= 2 categories, else PCA of the user factors; top ``taste_dims``,
    unit variance over users) + context vocabularies (``extra_values``: more candidate
    values per feature, e.g. the bundle's region names)."""
    basis = _category_basis(user_factors, item_factors, item_categories, taste_dims)
    if basis is not None:
        center, projection, names = basis
        space = "cat:" + ",".join(names)
    elif user_factors is not None and len(user_factors) >= 2 and taste_dims > 0:
        x = np.asarray(user_factors, dtype=np.float64)
        center = x.mean(axis=0)
        sample = x[:: max(1, len(x) // 20_000)] - center  # bounded cost at train time
        _, s, vt = np.linalg.svd(sample, full_matrices=False)
        k = min(taste_dims, vt.shape[0])
        std = np.maximum(s[:k] / np.sqrt(max(1, len(sample) - 1)), 1e-9)
        projection = vt[:k].T / std
        space = f"pca:{version}"
    else:
        d = 0 if user_factors is None else np.asarray(user_factors).shape[1]
        center, projection = np.zeros(d), np.zeros((d, 0))
        space = "none"
    vocab: list[tuple[str, ...]] = []
    for name in context_features:
        raw = user_features.get(name)
        extra = [str(v) for v in (extra_values or {}).get(name, ())]
        if (raw is None and not extra) or max_values <= 0:
            vocab.append(())
            continue
        seen = np.asarray(raw if raw is not None else [], dtype=object).astype(str)
        values, counts = np.unique(np.concatenate([seen, np.array(extra, dtype=str)]).astype(str),
                                   return_counts=True)  # fmt: skip
        order = np.lexsort((values, -counts))[:max_values]
        # Sorted by name: the slots (and so the statistics' keys) do not depend on how
        # often each value happened to occur in one bundle's training data.
        vocab.append(tuple(sorted(str(values[i]) for i in order if values[i] != "")))
    return UserFeatureMap(
        user_factors, user_index, center, projection, tuple(context_features), tuple(vocab),
        space,
    )  # fmt: skip


def _category_basis(
    user_factors: np.ndarray | None,
    item_factors: np.ndarray | None,
    item_categories: np.ndarray | None,
    taste_dims: int,
) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
    """(center [d], projection [d, k], category names) of the category-affinity taste: a
    user's score for the mean item vector of each of the ``taste_dims`` largest categories,
    standardized over the bundle's users; None when there are fewer than 2 categories."""
    if user_factors is None or item_factors is None or item_categories is None:
        return None
    if taste_dims <= 0 or len(user_factors) < 2:
        return None
    cats = np.asarray(item_categories).astype(str)
    values, counts = np.unique(cats[cats != ""], return_counts=True)
    if len(values) < 2:
        return None
    top = sorted(str(values[i]) for i in np.lexsort((values, -counts))[:taste_dims])
    items = np.asarray(item_factors, dtype=np.float64)
    means = np.stack([items[cats == c].mean(axis=0) for c in top], axis=1)  # [d, k]
    x = np.asarray(user_factors, dtype=np.float64)
    center = x.mean(axis=0)
    sample = x[:: max(1, len(x) // 20_000)] - center  # bounded cost at load time
    std = np.maximum((sample @ means).std(axis=0), 1e-9)
    return center, means / std, top


@dataclass(frozen=True)
class ThemePosterior:
    mean: np.ndarray  # [T, D]
    cov: np.ndarray  # [T, D, D] A⁻¹ (times noise² for the sampling covariance)
    built_at: float
    # [2T, D + D(D+1)/2] float32: score · [u, u_i u_j (i ≤ j)] = every theme's score mean
    # u·μ_t, then its variance σ² uᵀ A_t⁻¹ u (off-diagonal terms doubled in the matrix), in
    # one matrix-vector product per request.
    score: np.ndarray | None = None


class LinearThompsonPolicy(ArtworkPolicy):
    """Linear Thompson sampling over (user features) × (variant theme) + item offsets."""

    name = "lints"

    def __init__(
        self,
        catalog: ArtworkCatalog | None,
        item_index: Mapping[str, int],
        features: UserFeatureMap,
        *,
        theme_column: str = "theme",
        ridge: float = 1.0,
        noise: float = 0.15,  # exploration scale: chosen on simulator seeds 1 and 2 (bench: 0)
        item_effects: bool = True,
        item_ridge: float = 50.0,
        floor: float = 0.0,
        explore_share: float = EXPLORE_SHARE,
        n_samples: int = 64,
        refresh_ms: float = 1000.0,
        key_prefix: str = "bandit:lin",
        space: str = "v0",
        seed: int | None = None,
        compiled: bool = True,
    ) -> None:
        if ridge <= 0 or noise <= 0 or item_ridge <= 0:
            raise UsageError("bandit ridge, noise and item_ridge must be > 0")
        if not 0.0 <= floor <= 1.0:
            raise UsageError(f"bandit floor must be in [0, 1], got {floor}")
        if not 0.0 <= explore_share <= 1.0:
            raise UsageError(f"bandit explore_share must be in [0, 1], got {explore_share}")
        if n_samples < 1:
            raise UsageError(f"bandit n_samples must be >= 1, got {n_samples}")
        self.index = VariantIndex(catalog, item_index, theme_column)
        self.features = features
        self.ridge, self.noise = float(ridge), float(noise)
        self.item_effects, self.item_ridge = item_effects, float(item_ridge)
        self.floor, self.n_samples = float(floor), int(n_samples)
        self.explore_share = float(explore_share)
        self.refresh_s = float(refresh_ms) / 1000.0
        d = features.dim
        identity = (d, features.context_features, features.vocab, features.space)
        fingerprint = zlib.crc32(repr(identity).encode())
        self.prefix = f"{key_prefix}:{space}-{fingerprint:08x}"
        self._rng = np.random.default_rng(seed)
        self._prng = random.Random(seed)  # the per-item uniforms of the served draw
        self._pool = NormalPool(self._rng)
        self._floors = floors(self.index.vmax, self.floor, self.explore_share)
        self._no_floor = floors(self.index.vmax, 0.0, 0.0)
        self._upper = np.triu_indices(d)
        self._pairs = list(zip(*(x.tolist() for x in self._upper), strict=True))
        self._tastes: np.ndarray | None = None  # features.projected(), on first use
        self._a_fields = [f"A:{i}:{j}" for i, j in zip(*self._upper, strict=True)]
        self._b_fields = [f"b:{i}" for i in range(d)]
        self.theme_keys = [f"{self.prefix}:theme:{t}" for t in self.index.themes]
        self._posterior: ThemePosterior | None = None
        self._vectors: dict[tuple[Any, ...], tuple[list[float], np.ndarray]] = {}
        self._outers: dict[tuple[Any, ...], list[tuple[str, float]]] = {}
        # Item offsets per catalog row as one Python list (k means, then k variances), and
        # when each was computed: re-read at most every refresh_ms. A row never read has the
        # prior (mean 0, variance σ²/λ); without item effects every offset is 0, never read.
        self._off: list[list[float] | None] = [None] * self.index.n_rows
        self._off_stamp = [NEG_INF] * self.index.n_rows
        prior_var = self.noise**2 / self.item_ridge if item_effects else 0.0
        self._prior = [[0.0] * k + [prior_var] * k for k in range(self.index.vmax + 1)]
        # The compiled choice for the marginal path (same decisions as the reference, bit
        # for bit); compiled=False runs the numpy/Python reference.
        self._kernel = compiled_kernel(compiled, self.index.vmax)

    # -- keys ---------------------------------------------------------------------------------
    @property
    def state_key(self) -> str:
        """The hashes' prefix: the feature space and settings they are sums over."""
        return self.prefix

    def exposure_context(self, ctx: ArtworkContext) -> dict[str, str]:
        """The context features' values, the region and the taste values (``~taste``)
        this choice used: an event of the request is credited to exactly that ``u``."""
        fmap = self.features
        out = {f: context_value(ctx, f) for f in fmap.context_features}
        if ctx.region:
            out["region"] = ctx.region
        k = fmap.taste_dims
        if k:
            u = self._user(ctx)[0]
            out[TASTE_KEY] = ",".join([format(x, ".7g") for x in u[1 : 1 + k]])
        return out

    def context_from_exposure(self, user_id: str, recorded: Mapping[str, str]) -> ArtworkContext:
        ctx = super().context_from_exposure(user_id, recorded)
        text = recorded.get(TASTE_KEY)
        if not text:
            return ctx
        try:
            taste = tuple(float(x) for x in text.split(","))
        except ValueError:
            return ctx
        return ArtworkContext(user_id, region=ctx.region, features=ctx.features, taste=taste)

    def item_key(self, item_id: str) -> str:
        return f"{self.prefix}:item:{item_id}"

    def _stale(self) -> bool:
        p = self._posterior
        return p is None or time.monotonic() - p.built_at >= self.refresh_s

    def counter_keys(self, ctx: ArtworkContext, item_ids: Sequence[str]) -> list[str]:
        """Item hashes whose cached offsets are older than refresh_ms (all with 0), and the
        theme hashes when the theme posteriors are."""
        keys = []
        if self.item_effects:
            head = f"{self.prefix}:item:"
            if self.refresh_s > 0.0:
                stamp = self._off_stamp
                limit = time.monotonic() - self.refresh_s
                items = self.index.lookup(item_ids)
                pairs = zip(item_ids, items, strict=True)
                item_ids = [i for i, it in pairs if it and stamp[it.row] <= limit]
            keys = [head + i for i in item_ids]
        return keys + self.theme_keys if self._stale() else keys

    # -- posterior ----------------------------------------------------------------------------
    def refresh(self, counters: Mapping[str, Mapping[str, float]]) -> ThemePosterior:
        """Rebuild the per-theme posteriors from the theme hashes in ``counters``."""
        d = self.features.dim
        t = len(self.theme_keys)
        mean, cov = np.zeros((t, d)), np.zeros((t, d, d))
        for k, key in enumerate(self.theme_keys):
            h = counters.get(key, {})
            a = np.zeros((d, d))
            a[self._upper] = [h.get(f, 0.0) for f in self._a_fields]
            a = a + np.triu(a, 1).T + self.ridge * np.eye(d)
            b = np.array([h.get(f, 0.0) for f in self._b_fields])
            inv = np.linalg.inv(a)
            cov[k] = (inv + inv.T) / 2.0
            mean[k] = cov[k] @ b
        i, j = self._upper
        score = np.zeros((2 * t, d + len(i)), np.float32)
        score[:t, :d] = mean
        score[t:, d:] = self.noise**2 * cov[:, i, j] * np.where(i == j, 1.0, 2.0)
        post = ThemePosterior(mean, cov, time.monotonic(), score)
        self._posterior = post
        return post

    def _current(self, counters: Mapping[str, Mapping[str, float]]) -> ThemePosterior:
        post = self._posterior
        fresh = any(k in counters for k in self.theme_keys)
        if post is None or (fresh and self._stale()):
            return self.refresh(counters)
        return post

    def cells(
        self,
        ctx: ArtworkContext,
        item_ids: Sequence[str],
        counters: Mapping[str, Mapping[str, float]],
        offsets_only: bool = False,
    ) -> tuple[Cells, list[float], list[float]]:
        """The request's variants with their score mean and sd (``cells.table``), and the
        theme score means and variances ([T]). With ``offsets_only`` the cells hold only the
        item offsets (the general path that shares one draw per theme adds those itself).

        A variant of theme t scores ``u·θ_t + δ``: ``N(u·μ_t + δ̂, σ² uᵀA_t⁻¹u + σ²/(n + λ))``.
        The offsets δ̂ and their variances are cached per catalog row; the items whose hashes
        are in ``counters`` (those :meth:`counter_keys` asked for) are recomputed first.

        Cost (cold caches inside the server): one matrix-vector product for the theme
        scores, one Python pass over the ~80 cells into the flat [2, vmax, n] list, one
        ``np.array`` of it. Small numpy calls cost several µs each with cold caches; the
        Python pass over 80 cells costs less than the gathers it replaces."""
        cells, m, var = self._scores(ctx, item_ids, counters)
        n = cells.n
        if not n:
            return cells, m, var
        off, prior, flat, sqrt = self._off, self._prior, cells.mean_sd, math.sqrt
        size = cells.vmax * n
        for i, it in enumerate(cells.found):
            o, k = off[it.row] or prior[it.k], it.k
            if offsets_only:
                for j in range(k):
                    flat[j * n + i] = o[j]
                    flat[size + j * n + i] = sqrt(o[k + j])
                continue
            for j, c in enumerate(it.theme_codes):
                flat[j * n + i] = m[c] + o[j]
                flat[size + j * n + i] = sqrt(var[c] + o[k + j])
        cells.table = np.array(flat, np.float32).reshape(2, cells.vmax, n)
        return cells, m, var

    def _scores(
        self,
        ctx: ArtworkContext,
        item_ids: Sequence[str],
        counters: Mapping[str, Mapping[str, float]],
    ) -> tuple[Cells, list[float], list[float]]:
        """The request's (empty) cells and every theme's score mean and variance for this
        user; the item offsets of the items whose hashes were read are brought up to date."""
        post = self._current(counters)
        assert post.score is not None  # refresh() builds it
        m, var = self._theme_scores(post.score, self._features(ctx))
        cells = new_cells(self.index, item_ids)
        if cells.n and self.item_effects:
            self._update_offsets(cells, counters)
        return cells, m, var

    def _theme_scores(self, score: np.ndarray, phi: np.ndarray) -> tuple[list[float], list[float]]:
        """Each theme's score mean and variance (clamped at 0) for the user ``phi``: one
        compiled dot product per row when the kernel is built (no BLAS call on a [2T, F]
        matrix), else numpy's (float32 accumulation: equal within ~1e-6 relative)."""
        if self._kernel is not None:
            return self._kernel.theme_scores(score, phi)  # type: ignore[no-any-return]
        t = len(score) // 2
        mv: list[float] = (score @ phi).tolist()
        return mv[:t], [v if v > 0.0 else 0.0 for v in mv[t:]]

    def _update_offsets(self, cells: Cells, counters: Mapping[str, Mapping[str, float]]) -> None:
        """Recompute the cached offsets of the items whose hashes were read."""
        get, head = counters.get, f"{self.prefix}:item:"
        ridge, noise2 = self.item_ridge, self.noise**2
        off, stamp, now = self._off, self._off_stamp, time.monotonic()
        for item_id, it in zip(cells.ids, cells.found, strict=True):
            h = get(head + item_id)
            if h is None:
                continue
            means, variances = [], []
            for nf, rf in zip(it.n_fields, it.r_fields, strict=True):
                nn = h.get(nf, 0.0)
                denom = (nn if nn > 0.0 else 0.0) + ridge
                means.append(h.get(rf, 0.0) / denom)
                variances.append(noise2 / denom)
            off[it.row] = means + variances
            stamp[it.row] = now

    def _vector(self, ctx: ArtworkContext) -> np.ndarray:
        """``features.vector(ctx)`` (cached with :meth:`_features`)."""
        return np.asarray(self._user(ctx)[0])

    def _features(self, ctx: ArtworkContext) -> np.ndarray:
        """``[u, u_i u_j (i ≤ j)]`` (float32) with ``u = features.vector(ctx)``."""
        return self._user(ctx)[1]

    def _user(self, ctx: ArtworkContext) -> tuple[list[float], np.ndarray]:
        """``u`` and its score features, cached for users the bundle knows (their shipped CF
        vector and context values fully determine them). A known user's ``u`` is built in
        Python from the projected tastes computed once per policy (numpy calls on 16 values
        cost more than the arithmetic)."""
        fmap = self.features
        row = fmap.user_index.get(ctx.user_id)
        key = self._user_key(ctx)
        found = self._vectors.get(key) if key is not None else None
        if found is None:
            if ctx.taste is not None:
                u = fmap.vector(ctx).tolist()
            elif row is not None and fmap.user_factors is not None:
                if self._tastes is None:
                    self._tastes = fmap.projected()
                u = [1.0, *self._tastes[row].tolist()]
                u += [0.0] * (fmap.dim - len(u))
                for pos in fmap.one_hots(ctx):
                    u[pos] = 1.0
            else:
                u = fmap.vector(ctx).tolist()
            phi = np.array(u + [u[i] * u[j] for i, j in self._pairs], np.float32)
            found = (u, phi)
            if key is not None:
                if len(self._vectors) >= 100_000:
                    self._vectors.clear()
                self._vectors[key] = found
        return found

    def _user_key(self, ctx: ArtworkContext) -> tuple[Any, ...] | None:
        """What fully determines ``u``: a recorded taste or a known user's id, and the
        context values; None for a user known only by a live vector (not cached)."""
        values = (context_value(ctx, f) for f in self.features.context_features)
        if ctx.taste is not None:
            return (TASTE_KEY, ctx.taste, *values)
        if ctx.user_id in self.features.user_index:
            return (ctx.user_id, *values)
        return None

    def _outer_fields(self, ctx: ArtworkContext) -> list[tuple[str, float]]:
        """The nonzero ``A:i:j`` increments (u_i u_j, i ≤ j) of one impression for this user,
        cached like :meth:`_user` for users the bundle knows: a request's 20 impressions
        share them (RecordEvents spent ~0.2 ms per impression building them)."""
        key = self._user_key(ctx)
        found = self._outers.get(key) if key is not None else None
        if found is None:
            u = self._user(ctx)[0]
            found = [
                (f, x)
                for f, (i, j) in zip(self._a_fields, self._pairs, strict=True)
                if (x := u[i] * u[j]) != 0.0
            ]
            if key is not None:
                if len(self._outers) >= 100_000:
                    self._outers.clear()
                self._outers[key] = found
        return found

    def _wins(
        self,
        ctx: ArtworkContext,
        item_ids: Sequence[str],
        counters: Mapping[str, Mapping[str, float]],
        rng: np.random.Generator | None,
    ) -> tuple[Cells, list[list[int]], list[float]]:
        """(cells, per-item Monte Carlo win counts, one uniform per item for the draw)."""
        # No item shows two variants of one theme: within an item every variant's score is
        # an independent Gaussian (its theme's draw + its own offset), and each item's
        # variant is drawn from its own row. So the marginal N(m_t + δ, sd_t² + sd_δ²) gives
        # exactly the same choice distribution as sharing one θ draw per theme.
        marginal = self.index.distinct_themes
        cells, m, var = self.cells(ctx, item_ids, counters, offsets_only=not marginal)
        n, vmax, s = cells.n, cells.vmax, self.n_samples
        if not n:
            return cells, [], []
        u = uniforms(n + 1, rng, self._prng)  # u[0] places the normal window
        if marginal:
            return cells, gaussian_wins(cells, self._pool.window(vmax * n * s, u[0])), u[1:]
        # General path: one θ draw per theme and sample, shared by the theme's variants.
        t = len(m)
        block = self._pool.window((t + vmax * n) * s, u[0])
        m_t, sd_t = np.array(m, np.float32), np.sqrt(np.array(var, np.float32))
        theme_draw = m_t[:, None] + sd_t[:, None] * block[: t * s].reshape(t, s)
        r = np.fromiter((it.row for it in cells.found), np.int64, n)
        shared = theme_draw[self.index.code_rows.take(r, axis=0).T]  # [vmax, n, S]
        return cells, gaussian_wins(cells, block[t * s :], shared), u[1:]

    def variant_probabilities(
        self,
        ctx: ArtworkContext,
        item_ids: Sequence[str],
        counters: Mapping[str, Mapping[str, float]],
        rng: np.random.Generator | None = None,
    ) -> tuple[Cells, np.ndarray, list[ArtworkDecision]]:
        """(cells, [n, vmax] Monte Carlo choice probabilities before the floor, decisions
        drawn from them without a floor)."""
        cells, wins, u = self._wins(ctx, item_ids, counters, rng)
        if not cells.n:
            return cells, np.zeros((0, 1)), []
        return cells, probabilities(cells, wins), serve(cells, item_ids, wins, u, self._no_floor)

    # -- the policy ---------------------------------------------------------------------------
    def choose(
        self,
        ctx: ArtworkContext,
        item_ids: Sequence[str],
        counters: Mapping[str, Mapping[str, float]],
        *,
        explore: bool = True,
        rng: np.random.Generator | None = None,
    ) -> list[ArtworkDecision]:
        if not explore:
            return greedy(self.cells(ctx, item_ids, counters)[0], item_ids)
        kernel = self._kernel
        if kernel is not None and self.index.distinct_themes:
            # The marginal path in one compiled call: cells, draws and the served draw (what
            # cells + _wins + serve do, same uniforms, same decisions).
            cells, m, var = self._scores(ctx, item_ids, counters)
            n, s = cells.n, self.n_samples
            if not n:
                return serve(cells, item_ids, [], [], self._floors)
            u = uniforms(n + 1, rng, self._prng)
            start = self._pool.start(cells.vmax * n * s, u[0])
            if start is not None:
                chosen, props = kernel.choose_linear(
                    [it.row for it in cells.found],
                    self.index.k_rows,
                    self.index.code_rows,
                    self._off,
                    self._prior,
                    m,
                    var,
                    self._pool.values,
                    start,
                    s,
                    u[1:],
                    self._floors,
                )
                return decisions(cells, item_ids, chosen, props)
        cells, wins, u = self._wins(ctx, item_ids, counters, rng)
        return serve(cells, item_ids, wins, u, self._floors)

    def updates_for(self, ctx: ArtworkContext, event: StoredEvent) -> list[CounterDelta]:
        """Impression: A += uuᵀ, n += 1, item residual -= u·θ̂. Click: b += u, residual += 1."""
        if event.type not in (IMPRESSION_EVENT, REWARD_EVENT):
            return []
        found = self.index.get(event.item_id)
        if not event.variant_id or found is None or event.variant_id not in found.variant_ids:
            return []
        theme = int(found.theme_codes[found.variant_ids.index(event.variant_id)])
        theme_key = self.theme_keys[theme]
        item_key = self.item_key(event.item_id)
        v = event.variant_id
        u = self._vector(ctx)
        if event.type == IMPRESSION_EVENT:
            out = [delta(theme_key, f, x) for f, x in self._outer_fields(ctx)]
            out.append(delta(theme_key, "n", 1.0))
            if self.item_effects:
                post = self._posterior
                pred = float(post.mean[theme] @ u) if post is not None else 0.0
                out += [delta(item_key, f"{v}:n", 1.0), delta(item_key, f"{v}:r", -pred)]
            return out
        pairs = zip(self._b_fields, u.tolist(), strict=True)
        out = [delta(theme_key, f, x) for f, x in pairs if x != 0.0]
        if self.item_effects:
            out += [delta(item_key, f"{v}:c", 1.0), delta(item_key, f"{v}:r", 1.0)]
        return out

    def has_variant(self, item_id: str, variant_id: str) -> bool:
        return self.index.has_variant(item_id, variant_id)


_FEATURE_PARAMS = ("taste_dims", "context_features", "max_values")
_MAP_CACHE: dict[tuple[Any, ...], UserFeatureMap] = {}
MAX_AUTO_CONTEXT_FEATURES = 4
CATEGORY_COLUMN = "category"


def taste_column(item_features: Mapping[str, np.ndarray], taste_dims: int = 8) -> str | None:
    """The item column whose groups define the taste directions: ``category`` when it has
    at least two values, else the column whose ``taste_dims`` largest groups cover the most
    items (ties by name), skipping id-like columns (a group per item says nothing about a
    taste) and columns with fewer than two values. None when no column qualifies."""
    best: tuple[int, str] | None = None
    for name in sorted(str(c) for c in item_features):
        values = np.asarray(item_features[name]).astype(str)
        values = values[values != ""]
        groups, counts = np.unique(values, return_counts=True)
        if len(groups) < 2 or len(groups) * 2 > len(np.asarray(item_features[name])):
            continue
        if name == CATEGORY_COLUMN:
            return name
        covered = int(np.sort(counts)[::-1][: max(taste_dims, 1)].sum())
        if best is None or covered > best[0]:
            best = (covered, name)
    return None if best is None else best[1]


def default_context_features(bundle: Bundle) -> tuple[str, ...]:
    """``region`` and the bundle's other user-feature columns (sorted), at most 4."""
    others = sorted(str(c) for c in bundle.user_features if str(c) != "region")
    return ("region", *others)[:MAX_AUTO_CONTEXT_FEATURES]


def _taste_groups(bundle: Bundle, taste_dims: int) -> np.ndarray | None:
    column = taste_column(bundle.item_features, taste_dims)
    if column is None:
        return None
    values = np.asarray(bundle.item_features[column]).astype(str)
    return np.where(values == "", "", np.char.add(f"{column}=", values))


def make_linear(bundle: Bundle, **params: Any) -> LinearThompsonPolicy:
    """The ``lints`` policy for a bundle; feature maps are cached per (bundle, settings)."""
    fparams = {k: params.pop(k) for k in _FEATURE_PARAMS if k in params}
    fparams["context_features"] = tuple(
        fparams.get("context_features") or default_context_features(bundle)
    )
    fparams.setdefault("max_values", 8)
    key = (str(bundle.path), bundle.version, tuple(sorted(fparams.items())))
    fmap = _MAP_CACHE.get(key)
    if fmap is None:
        fmap = build_feature_map(
            bundle.user_factors,
            bundle.user_index,
            bundle.user_features,
            item_factors=bundle.item_factors,
            item_categories=_taste_groups(bundle, int(fparams.get("taste_dims", 8))),
            extra_values={"region": [str(r) for r in bundle.region_names]},
            version=bundle.version,
            **fparams,
        )
        _MAP_CACHE.clear()  # one bundle at a time: the previous one is being swapped out
        _MAP_CACHE[key] = fmap
    # The space is the taste basis, not the bundle version (see the module docstring).
    params.setdefault("space", fmap.space.split(":", 1)[0])
    return LinearThompsonPolicy(bundle.artwork, bundle.item_index, fmap, **params)
