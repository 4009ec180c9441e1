"""Beta-Bernoulli Thompson sampling per (item, variant, context bucket), with back-off.

Features used: the ``bucket_features`` (default ``region`` and ``segment``) of the merged
context, the request's region winning over the profile's (``ts-item``: none). Statistics
are keyed by item and variant id and bucket values, never by bundle version, so they
survive a retrain; an item or variant that disappears is no longer read, a new one starts
from the prior.

Counter layout (feature-store hashes, shared by every replica, updated atomically):

* ``<prefix>:<item_id>`` - the item-level statistics over all users;
* ``<prefix>:<item_id>|<bucket>`` - the same for one context bucket, where ``<bucket>`` is
  ``region=US-9,segment=vip`` built from the configured ``bucket_features``;

each with fields ``<variant_id>:n`` (impressions) and ``<variant_id>:c`` (clicks).

Back-off: a bucket's prior is the item-level posterior mean with a strength of at most
``backoff_strength`` pseudo-impressions, so a thin bucket behaves like the item as a whole and
a bucket with many impressions follows its own data.

Propensities: ``n_samples`` joint posterior draws for all variants of all items at once give
each variant's share of wins ``p̂`` (Monte Carlo); the served variant is then drawn from
``p̂`` itself. So the logged propensity is exactly the probability the served variant had,
and IPS stays unbiased; ``E[p̂]`` is Thompson sampling's own choice distribution, so the
policy explores as TS does on average.

Draws: by default (``gaussian=True``) each Beta posterior is replaced for the draws by the
Gaussian with the same mean and variance. A float32 normal draw costs about a sixth of
``rng.beta`` and the draws were most of the choice's CPU (docs/benchmarks/bandit.md). The
approximation changes how the policy explores thin arms a little (a Beta(1 + c, 1 + n - c)
is skewed while c is small), not what is logged: the propensity is still exactly the
probability of the variant served. ``gaussian=False`` draws from the Beta posteriors.

Exploration: ``explore_share`` (default 0.05) of the choices are uniform, as a per-variant
floor of share / k, so the logs keep every variant in their support (positivity for OPE).

Caching: with ``refresh_ms`` > 0 (default 1000, Gaussian draws) each item's posterior cells
are kept per context bucket and catalog row, and :meth:`counter_keys` asks only for the items
whose cells are older than that; replicas share the counters through the store and see each
other's events within ``refresh_ms``. ``refresh_ms=0`` reads every item on every call.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from math import sqrt
from typing import Any

import numpy as np

from feature_store.base import CounterDelta, StoredEvent
from recsvc.bandit.base import ArtworkContext, ArtworkDecision, ArtworkPolicy
from recsvc.bandit.variants import (
    Cells,
    CellTable,
    ItemVariants,
    NormalPool,
    VariantIndex,
    compiled_kernel,
    count_max,
    decisions,
    floors,
    gaussian_wins,
    greedy,
    new_cells,
    padded,
    probabilities,
    serve,
    uniforms,
)
from recsvc.bundle import ArtworkCatalog, Bundle
from recsvc.errors import UsageError

REWARD_EVENT = "click"
IMPRESSION_EVENT = "impression"
# Default share of TS choices made uniformly at random (a per-variant floor of share / k).
# Positivity: without it, a converged posterior wins all 64 draws and the served variant is
# logged with propensity 1, so the logs hold no evidence about the other variants and IPS
# of any other policy is biased (docs/benchmarks/bandit.md). With it every variant keeps
# propensity >= share / k and a uniform target's importance weights stay <= 1 / share.
EXPLORE_SHARE = 0.05
MAX_TABLES = 256  # cached posterior tables (one per context bucket) per policy


def context_value(ctx: ArtworkContext, name: str) -> str:
    """A context feature by name; ``region`` comes from the request context first."""
    if name == "region" and ctx.region:
        return ctx.region
    return str(ctx.features.get(name, ""))


class ThompsonPolicy(ArtworkPolicy):
    """Beta-Bernoulli TS; ``bucket_features=()`` makes it non-contextual (item level only)."""

    name = "ts"

    def __init__(
        self,
        catalog: ArtworkCatalog | None,
        item_index: Mapping[str, int],
        *,
        bucket_features: Sequence[str] = ("region", "segment"),
        prior_alpha: float = 1.0,
        prior_beta: float = 1.0,
        backoff_strength: float = 20.0,
        floor: float = 0.0,
        explore_share: float = EXPLORE_SHARE,
        n_samples: int = 64,
        cache_samples: int = 256,
        refresh_ms: float = 1000.0,
        key_prefix: str = "bandit:ts",
        seed: int | None = None,
        gaussian: bool = True,
        compiled: bool = True,
    ) -> None:
        if prior_alpha <= 0 or prior_beta <= 0:
            raise UsageError("bandit prior_alpha and prior_beta must be > 0")
        if not 0.0 <= floor <= 1.0:
            raise UsageError(f"bandit floor must be in [0, 1], got {floor}")
        if not 0.0 <= explore_share <= 1.0:
            raise UsageError(f"bandit explore_share must be in [0, 1], got {explore_share}")
        if n_samples < 1:
            raise UsageError(f"bandit n_samples must be >= 1, got {n_samples}")
        self.index = VariantIndex(catalog, item_index)
        self.bucket_features = tuple(bucket_features)
        self.prior_alpha = float(prior_alpha)
        self.prior_beta = float(prior_beta)
        self.backoff_strength = float(backoff_strength)
        self.floor = float(floor)
        self.explore_share = float(explore_share)
        self.n_samples = int(n_samples)
        self.key_prefix = key_prefix
        self.gaussian = bool(gaussian)
        self._rng = np.random.default_rng(seed)
        self._prng = random.Random(seed)  # the per-item uniforms of the served draw
        self._pool = NormalPool(self._rng)
        self._floors = floors(self.index.vmax, self.floor, self.explore_share)
        self._no_floor = floors(self.index.vmax, 0.0, 0.0)
        # Cached posteriors (Gaussian draws only): an item's counters are re-read at most
        # every refresh_ms, as the linear policy re-reads its theme posteriors.
        self.refresh_s = float(refresh_ms) / 1000.0
        self.cache_samples = max(64, int(cache_samples) // 64 * 64)  # whole 64-bit words
        self._tables: dict[str, CellTable] = {}
        # The compiled choice (same decisions as the reference path, bit for bit) for the
        # cached rows (refresh_ms > 0, Gaussian draws); compiled=False runs the numpy/Python
        # reference.
        self._kernel = compiled_kernel(compiled, self.index.vmax)

    # -- keys ---------------------------------------------------------------------------------
    @property
    def state_key(self) -> str:
        """The counters' prefix and bucket features: both decide what a counter means."""
        return f"{self.key_prefix}|{','.join(self.bucket_features)}"

    def exposure_context(self, ctx: ArtworkContext) -> dict[str, str]:
        """The bucket features' values (and the region): what the choice depended on."""
        out = {f: context_value(ctx, f) for f in self.bucket_features}
        if ctx.region:
            out["region"] = ctx.region
        return out

    def bucket(self, ctx: ArtworkContext) -> str:
        return ",".join(f"{f}={context_value(ctx, f)}" for f in self.bucket_features)

    def item_key(self, item_id: str) -> str:
        return f"{self.key_prefix}:{item_id}"

    def bucket_key(self, item_id: str, bucket: str) -> str:
        return f"{self.key_prefix}:{item_id}|{bucket}"

    def counter_keys(self, ctx: ArtworkContext, item_ids: Sequence[str]) -> list[str]:
        """The item (and bucket) hashes of the requested items; with a refresh interval only
        those whose cached cells are older than it."""
        head = f"{self.key_prefix}:"
        bucket = self.bucket(ctx) if self.bucket_features else ""
        if self._cached:
            stamp = self._table(bucket).stamp
            limit = time.monotonic() - self.refresh_s
            items = self.index.lookup(item_ids)
            item_ids = [
                i for i, it in zip(item_ids, items, strict=True) if it and stamp[it.row] <= limit
            ]
        keys = [head + i for i in item_ids]
        if self.bucket_features:
            tail = "|" + bucket
            keys += [head + i + tail for i in item_ids]
        return keys

    @property
    def _cached(self) -> bool:
        return self.refresh_s > 0.0 and self.gaussian

    def _table(self, bucket: str) -> CellTable:
        table = self._tables.get(bucket)
        if table is None:
            if len(self._tables) >= MAX_TABLES:
                self._tables.clear()  # bounded memory: many buckets re-read their counters
            table = self._tables[bucket] = CellTable(self.index.n_rows, self.index.vmax)
        return table

    # -- posterior ----------------------------------------------------------------------------
    def beta_params(
        self, it: ItemVariants, item_h: Mapping[str, float], bucket_h: Mapping[str, float] | None
    ) -> tuple[list[float], list[float]]:
        """Alpha and beta of each variant of one item from its item-level (and bucket) hash."""
        pa, pb, cap = self.prior_alpha, self.prior_beta, self.backoff_strength
        alphas, betas = [], []
        for nf, cf in zip(it.n_fields, it.c_fields, strict=True):
            # A click without its impression (lost event) must not make beta negative.
            c = max(item_h.get(cf, 0.0), 0.0)
            a, b = pa + c, pb + max(item_h.get(nf, 0.0), c) - c
            if bucket_h is not None:
                # Shrink the bucket toward the item-level posterior mean, with no more
                # weight than the item level itself has (a new item keeps a wide prior).
                cb = max(bucket_h.get(cf, 0.0), 0.0)
                nb = max(bucket_h.get(nf, 0.0), cb)
                t = a + b
                strength = cap if cap < t else t
                mean = a / t
                a, b = strength * mean + cb, strength * (1.0 - mean) + nb - cb
            alphas.append(a)
            betas.append(b)
        return alphas, betas

    @staticmethod
    def moments(alphas: list[float], betas: list[float]) -> tuple[list[float], list[float]]:
        """Mean and sd of each Beta (the Gaussian the draws use)."""
        means, sds = [], []
        for a, b in zip(alphas, betas, strict=True):
            t = a + b
            mean = a / t
            means.append(mean)
            sds.append(sqrt(mean * (1.0 - mean) / (t + 1.0)))
        return means, sds

    def cells(
        self,
        ctx: ArtworkContext,
        item_ids: Sequence[str],
        counters: Mapping[str, Mapping[str, float]],
        beta: bool = False,
        take: bool = True,
    ) -> Cells:
        """The request's variants with their posterior mean and sd (the Gaussian with the
        Beta posterior's moments), or with ``beta=True`` the Beta's alpha and beta.

        With a refresh interval (``refresh_ms`` > 0, Gaussian draws) the items whose hashes
        are in ``counters`` (those :meth:`counter_keys` asked for) are recomputed into the
        bucket's CellTable (``cells.source``) and every item is read from it (``take=False``
        leaves ``cells.table`` unset: the compiled choice reads the CellTable itself)."""
        cells = new_cells(self.index, item_ids)
        if not cells.n:
            return cells
        empty: Mapping[str, float] = {}
        get, head = counters.get, f"{self.key_prefix}:"
        bucket = self.bucket(ctx) if self.bucket_features else ""
        tail = "|" + bucket
        with_bucket = bool(self.bucket_features)
        if self._cached and not beta:
            table = self._table(bucket)
            rows: list[int] = []
            values: list[float] = []
            stamps: list[float] = []
            now, stamp, choice = time.monotonic(), table.stamp, table.choice
            # The rows' posteriors (and item-level rows' choice probabilities) are computed by
            # the compiled kernel (same arithmetic): this pass only gathers the hashes of the
            # rows to recompute.
            kernel = self._kernel
            item_hs: list[Mapping[str, float] | None] = []
            bucket_hs: list[Mapping[str, float] | None] = []
            found: list[ItemVariants] = []
            for item_id, it in zip(cells.ids, cells.found, strict=True):
                item_h = get(head + item_id)
                bucket_h = get(head + item_id + tail) if with_bucket else None
                # Recompute rows whose hashes were all read (counter_keys asks for the item
                # and bucket hash together); a row never computed is computed from what is
                # there but left stale, so the next call reads it.
                complete = item_h is not None and (bucket_h is not None or not with_bucket)
                if complete or choice[it.row] is None:
                    i_h = item_h if item_h is not None else empty
                    b_h = (bucket_h if bucket_h is not None else empty) if with_bucket else None
                    rows.append(it.row)
                    stamps.append(now if complete else stamp[it.row])
                    if kernel is not None:
                        item_hs.append(i_h)
                        bucket_hs.append(b_h)
                        found.append(it)
                        continue
                    means, sds = self.moments(*self.beta_params(it, i_h, b_h))
                    values += padded(means, sds, cells.vmax)
            if rows and kernel is not None:
                kernel.ts_moments(
                    table.values,
                    rows,
                    item_hs,
                    bucket_hs,
                    [it.n_fields for it in found],
                    [it.c_fields for it in found],
                    self.prior_alpha,
                    self.prior_beta,
                    self.backoff_strength,
                )
                for r, t in zip(rows, stamps, strict=True):
                    stamp[r] = t
                    choice[r] = _COMPUTED
                if not with_bucket:
                    for r, probs in zip(rows, self._row_probabilities(table, rows), strict=True):
                        choice[r] = probs
            elif rows:
                block = table.put(rows, values, stamps)
                if not with_bucket:
                    for row, probs in zip(rows, self._choice_probabilities(block), strict=True):
                        choice[row] = probs
                else:  # the row is computed: a never-computed row is recognised by None
                    for row in rows:
                        choice[row] = _COMPUTED
            cells.source = table
            if take:
                cells.table = table.rows(cells)
            if not with_bucket:
                # Item-level rows are requested many times per refresh: their choice
                # probabilities are cached with them. Bucket rows are mostly stale when
                # requested (12 buckets: each (item, bucket) row is seen ~once a second), so
                # estimating them per refresh costs more than the call's own draws (bench).
                cells.choice = [choice[it.row] for it in cells.found]  # type: ignore[misc]
            return cells
        out, n = cells.mean_sd, cells.n
        size = cells.vmax * n
        for i, (item_id, it) in enumerate(zip(cells.ids, cells.found, strict=True)):
            item_h = get(head + item_id, empty)
            bucket_h = get(head + item_id + tail, empty) if with_bucket else None
            first, second = self.beta_params(it, item_h, bucket_h)
            if not beta:
                first, second = self.moments(first, second)
            for j in range(it.k):
                out[j * n + i] = first[j]
                out[size + j * n + i] = second[j]
        return cells

    def _row_probabilities(self, table: CellTable, rows: list[int]) -> list[list[float]]:
        """:meth:`_choice_probabilities` of CellTable ``rows`` by the compiled kernel (same
        draws, same counts), or by numpy when the pool is too small for them."""
        m, vmax, s = len(rows), table.values.shape[2], self.cache_samples
        u = self._prng.random()
        start = self._pool.start(vmax * m * s, u)
        if start is None or self._kernel is None:
            return self._choice_probabilities(table.values[rows], u)
        probs: list[list[float]] = self._kernel.choice_probs(
            table.values, rows, self.index.k_rows, self._pool.values, start, s
        )
        return probs

    def _choice_probabilities(self, block: np.ndarray, u: float | None = None) -> list[list[float]]:
        """Thompson sampling's choice probabilities of each row of ``block`` ([m, 2, vmax]
        means and sds), from ``cache_samples`` Monte Carlo draws per row, computed once per
        refresh of the row. The served variant is drawn from them, so the logged propensity
        is exactly its probability; 256 draws put each within ~0.03 (sd) of TS's own (1,024
        cost 0.45 ms per call for `ts`, whose bucket rows are mostly stale: bench)."""
        m, _, vmax = block.shape
        s = self.cache_samples
        u = self._prng.random() if u is None else u
        noise = self._pool.window(vmax * m * s, u).reshape(vmax, m, s)
        samples = noise * block[:, 1].T[:, :, None]
        samples += block[:, 0].T[:, :, None]
        wins = count_max(samples)
        probs: list[list[float]] = (wins / wins.sum(axis=1, keepdims=True)).tolist()
        return probs

    def _wins(
        self,
        ctx: ArtworkContext,
        item_ids: Sequence[str],
        counters: Mapping[str, Mapping[str, float]],
        rng: np.random.Generator | None,
    ) -> tuple[Cells, list[list[int]], list[float]]:
        """(cells, per-item Monte Carlo win counts, one uniform per item for the draw)."""
        return self._draw(self.cells(ctx, item_ids, counters, beta=not self.gaussian), rng)

    def _draw(
        self, cells: Cells, rng: np.random.Generator | None
    ) -> tuple[Cells, list[list[int]], list[float]]:
        """:meth:`_wins` on the request's cells."""
        n = cells.n
        if not n:
            return cells, [], []
        u = uniforms(n + 1, rng, self._prng)  # u[0] places the normal window
        if self.gaussian:
            noise = self._pool.window(cells.vmax * n * self.n_samples, u[0])
            return cells, gaussian_wins(cells, noise), u[1:]
        ab = np.array(cells.mean_sd).reshape(2, cells.vmax, n)
        pad = np.isneginf(ab[0])
        draw = rng or self._rng
        samples = draw.beta(np.where(pad, 1.0, ab[0]), np.where(pad, 1.0, ab[1]),
                            size=(self.n_samples, cells.vmax, n))  # fmt: skip
        samples[:, pad] = -np.inf
        return cells, count_max(samples.transpose(1, 2, 0)).tolist(), u[1:]

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
            return greedy(self.cells(ctx, item_ids, counters), item_ids)
        kernel = self._kernel
        cells = self.cells(ctx, item_ids, counters, beta=not self.gaussian, take=kernel is None)
        if cells.choice is not None:
            # Item-level rows' choice probabilities are cached with their posteriors: a
            # request draws each item's variant from them (one compiled call, or serve()).
            u = uniforms(cells.n, rng, self._prng)
            if kernel is not None and cells.n:
                ks = [it.k for it in cells.found]
                chosen, props = kernel.serve_lists(cells.choice, ks, u, self._floors)
                return decisions(cells, item_ids, chosen, props)
            return serve(cells, item_ids, cells.choice, u, self._floors)  # type: ignore[arg-type]
        if kernel is not None and cells.source is not None and cells.n:
            # Cached bucket rows: the draws and the served draw in one compiled call on the
            # CellTable (what _draw + serve do, same uniforms, same decisions).
            n, s = cells.n, self.n_samples
            u = uniforms(n + 1, rng, self._prng)
            start = self._pool.start(cells.vmax * n * s, u[0])
            if start is not None:
                chosen, props = kernel.choose_rows(
                    cells.source.values,
                    [it.row for it in cells.found],
                    self.index.k_rows,
                    self._pool.values,
                    start,
                    s,
                    u[1:],
                    self._floors,
                )
                return decisions(cells, item_ids, chosen, props)
            cells.table = cells.source.rows(cells)
            noise = self._pool.window(cells.vmax * n * s, u[0])
            return serve(cells, item_ids, gaussian_wins(cells, noise), u[1:], self._floors)
        cells, wins, u = self._draw(cells, rng)
        return serve(cells, item_ids, wins, u, self._floors)

    def updates_for(self, ctx: ArtworkContext, event: StoredEvent) -> list[CounterDelta]:
        """Impression -> ``<variant>:n`` += 1, click -> ``<variant>:c`` += 1, on the item key
        and the user's bucket key. Events without a known variant move nothing."""
        if event.type not in (IMPRESSION_EVENT, REWARD_EVENT):
            return []
        if not event.variant_id or not self.index.has_variant(event.item_id, event.variant_id):
            return []
        field = f"{event.variant_id}:{'n' if event.type == IMPRESSION_EVENT else 'c'}"
        deltas = [CounterDelta(self.item_key(event.item_id), field, 1.0)]
        if self.bucket_features:
            key = self.bucket_key(event.item_id, self.bucket(ctx))
            deltas.append(CounterDelta(key, field, 1.0))
        return deltas

    def has_variant(self, item_id: str, variant_id: str) -> bool:
        return self.index.has_variant(item_id, variant_id)


_COMPUTED: list[float] = []  # CellTable.choice of a computed bucket row (no cached choice)


def make_thompson(bundle: Bundle, **params: Any) -> ThompsonPolicy:
    return ThompsonPolicy(bundle.artwork, bundle.item_index, **params)
