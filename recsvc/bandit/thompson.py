"""Beta-Bernoulli Thompson sampling per (item, variant, context bucket), with back-off.

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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from feature_store.base import CounterDelta, StoredEvent
from recsvc.bandit.base import ArtworkContext, ArtworkDecision, ArtworkPolicy
from recsvc.bandit.variants import (
    Layout,
    NormalPool,
    VariantIndex,
    choice_counts,
    draw_served,
    gather,
    greedy,
    layout,
    serve,
    win_counts,
)
from recsvc.errors import UsageError
from training.bundle import ArtworkCatalog, Bundle

REWARD_EVENT = "click"
IMPRESSION_EVENT = "impression"
# Default share of TS choices made uniformly at random (a per-variant floor of share / k).
# Positivity: without it, a converged posterior wins all 64 draws and the served variant is
# logged with propensity 1, so the logs hold no evidence about the other variants and IPS
# of any other policy is biased (docs/benchmarks/bandit.md). With it every variant keeps
# propensity >= share / k and a uniform target's importance weights stay <= 1 / share.
EXPLORE_SHARE = 0.05


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
        key_prefix: str = "bandit:ts",
        seed: int | None = None,
        gaussian: bool = True,
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
        self._pool = NormalPool(self._rng)

    # -- keys ---------------------------------------------------------------------------------
    def bucket(self, ctx: ArtworkContext) -> str:
        return ",".join(f"{f}={context_value(ctx, f)}" for f in self.bucket_features)

    def item_key(self, item_id: str) -> str:
        return f"{self.key_prefix}:{item_id}"

    def bucket_key(self, item_id: str, bucket: str) -> str:
        return f"{self.key_prefix}:{item_id}|{bucket}"

    def counter_keys(self, ctx: ArtworkContext, item_ids: Sequence[str]) -> list[str]:
        head = f"{self.key_prefix}:"
        keys = [head + i for i in item_ids]
        if self.bucket_features:
            tail = "|" + self.bucket(ctx)
            keys += [head + i + tail for i in item_ids]
        return keys

    # -- posterior ----------------------------------------------------------------------------
    def posterior(
        self,
        ctx: ArtworkContext,
        lay: Layout,
        item_ids: Sequence[str],
        counters: Mapping[str, Mapping[str, float]],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Beta parameters ``(alpha, beta)`` as [n, vmax] matrices (padding: the prior, > 0).

        The item-level and bucket hashes of every item are read in one pass (:func:`gather`)."""
        ids = item_ids if len(lay.cat) == len(item_ids) else [item_ids[r] for r in lay.rows]
        empty: Mapping[str, float] = {}
        get, head = counters.get, f"{self.key_prefix}:"
        keys = [head + i for i in ids]
        if self.bucket_features:
            tail = "|" + self.bucket(ctx)
            keys += [k + tail for k in keys]
        g = gather(self.index, lay, [get(k, empty) for k in keys], "nc", len(keys) // len(ids))
        # A click without its impression (lost event) must not make beta negative.
        g = np.maximum(g, 0.0)
        c = g[:, :, 1]
        n = np.maximum(g[:, :, 0], c)
        alpha = self.prior_alpha + c[0]
        beta = self.prior_beta + (n[0] - c[0])
        if self.bucket_features:
            # Shrink the bucket toward the item-level posterior mean, with no more weight
            # than the item level itself has (a new item keeps a wide prior).
            total = alpha + beta
            strength = np.minimum(self.backoff_strength, total)
            mean = alpha / total
            alpha = strength * mean + c[1]
            beta = strength * (1.0 - mean) + (n[1] - c[1])
        return alpha, beta

    def _wins(
        self,
        ctx: ArtworkContext,
        item_ids: Sequence[str],
        counters: Mapping[str, Mapping[str, float]],
        rng: np.random.Generator,
    ) -> tuple[Layout, np.ndarray, np.ndarray]:
        """(layout, [n, vmax] Monte Carlo win counts, n uniforms for the served draw)."""
        lay = layout(self.index, item_ids)
        if lay.empty:
            return lay, np.zeros((0, 1), np.int64), np.zeros(0)
        alpha, beta = self.posterior(ctx, lay, item_ids, counters)
        n = len(lay.cat)
        u = rng.random(n + 1)  # u[0] places the normal window, u[1:] draw the served variants
        if self.gaussian:
            total = alpha + beta
            mean = alpha / total
            sd = np.sqrt(mean * (1.0 - mean) / (total + 1.0))
            noise = self._pool.window(mean.size * self.n_samples, float(u[0]), rng)
            return lay, win_counts(mean, sd, lay, noise), u[1:]
        samples = rng.beta(alpha, beta, size=(self.n_samples, *alpha.shape))
        samples += lay.penalty[None]
        return lay, choice_counts(samples), u[1:]

    def variant_probabilities(
        self,
        ctx: ArtworkContext,
        item_ids: Sequence[str],
        counters: Mapping[str, Mapping[str, float]],
        rng: np.random.Generator | None = None,
    ) -> tuple[Layout, np.ndarray, np.ndarray]:
        """(layout, [n, vmax] Monte Carlo choice probabilities before the floor, choices)."""
        lay, wins, u = self._wins(ctx, item_ids, counters, rng or self._rng)
        if lay.empty:
            return lay, np.zeros((0, 1)), np.zeros(0, np.int64)
        chosen, _ = draw_served(lay, wins, u)
        return lay, wins / wins.sum(axis=1, keepdims=True), chosen

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
            lay = layout(self.index, item_ids)
            if lay.empty:
                return greedy(self.index, lay, item_ids, np.zeros((0, 1)))
            alpha, beta = self.posterior(ctx, lay, item_ids, counters)
            return greedy(self.index, lay, item_ids, alpha / (alpha + beta))
        lay, wins, u = self._wins(ctx, item_ids, counters, rng or self._rng)
        return serve(self.index, lay, item_ids, wins, self.floor, u, self.explore_share)

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


def make_thompson(bundle: Bundle, **params: Any) -> ThompsonPolicy:
    return ThompsonPolicy(bundle.artwork, bundle.item_index, **params)
