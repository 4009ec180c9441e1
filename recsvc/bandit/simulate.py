"""A simulated storefront with known ground truth, for bandit tests and the benchmark.

Users have hidden tastes over themes; every item has a few artwork variants with themes;
the click probability of (user, item, variant) is
``sigmoid(base + item_effect + variant_effect + gain · taste[user, theme(variant)])``. Users
also browse items of the genres they like, which gives a CF model something to learn the
tastes from, and carry a ``segment`` that agrees with their strongest taste most of the
time (a noisy proxy a context bucket can use) and a ``region`` that is pure noise.

Store scenario (``make_world(store_signal=True)``): the click depends on the store the
shopper stands in, sent with each request as ``context.region`` (one of the same region
names, drawn per request, unrelated to the profile's home region): each store favours one
theme, ``gain · store_affinity[store, theme]`` replaces the taste term. Nothing in the
profile or the CF embedding predicts it; only the request context does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

THEMES = ("comedy", "drama", "action", "romance")


@dataclass(frozen=True)
class World:
    taste: np.ndarray  # [U, T] hidden
    user_ids: np.ndarray  # [U] str
    segment: np.ndarray  # [U] str
    region: np.ndarray  # [U] str
    item_ids: np.ndarray  # [I] str
    genre: np.ndarray  # [I] int theme index
    item_effect: np.ndarray  # [I]
    indptr: np.ndarray  # [I+1] variants of item i: variant rows indptr[i]:indptr[i+1]
    variant_ids: np.ndarray  # [V] str
    variant_theme: np.ndarray  # [V] int
    variant_effect: np.ndarray  # [V]
    base: float
    gain: float
    # [S, T] per store (request context region) affinity to each theme; None: taste decides
    store_affinity: np.ndarray | None = None
    store_names: tuple[str, ...] = ()

    def click_prob(self, user: int, variants: np.ndarray, store: int = -1) -> np.ndarray:
        """P(click) of ``user`` (standing in store ``store``) for variant rows ``variants``."""
        item = np.searchsorted(self.indptr, variants, side="right") - 1
        themes = self.variant_theme[variants]
        if self.store_affinity is not None:
            signal = self.store_affinity[store, themes]
        else:
            signal = self.taste[user, themes]
        logit = self.base + self.item_effect[item] + self.variant_effect[variants]
        return 1.0 / (1.0 + np.exp(-(logit + self.gain * signal)))

    def variants_of(self, item: int) -> np.ndarray:
        return np.arange(self.indptr[item], self.indptr[item + 1])

    def artwork_frame(self) -> pd.DataFrame:
        item_of = np.repeat(np.arange(len(self.item_ids)), np.diff(self.indptr))
        return pd.DataFrame(
            {
                "item_id": self.item_ids[item_of],
                "variant_id": self.variant_ids,
                "theme": np.array(THEMES)[self.variant_theme],
            }
        )

    def users_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {"user_id": self.user_ids, "region": self.region, "segment": self.segment}
        )

    def items_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"item_id": self.item_ids, "category": np.array(THEMES)[self.genre]})


def make_world(
    n_users: int = 2000,
    n_items: int = 200,
    variants_per_item: tuple[int, int] = (2, 4),
    *,
    base: float = -3.0,
    gain: float = 2.0,
    segment_accuracy: float = 0.6,
    seed: int = 0,
    store_signal: bool = False,
) -> World:
    rng = np.random.default_rng(seed)
    t = len(THEMES)
    favourite = rng.integers(0, t, n_users)
    # A strong favourite theme plus a weaker second one; tastes are in [0, 1].
    taste = rng.uniform(0.0, 0.3, (n_users, t))
    taste[np.arange(n_users), favourite] = 1.0
    agrees = rng.random(n_users) < segment_accuracy
    seg_theme = np.where(agrees, favourite, rng.integers(0, t, n_users))
    segment = np.array([f"seg-{THEMES[s]}" for s in seg_theme])
    region = np.array([f"R{r}" for r in rng.integers(0, 3, n_users)])
    regions = tuple(f"R{r}" for r in range(3))
    affinity = None
    if store_signal:
        # Each store favours one theme (a permutation: stores disagree), the rest weakly.
        affinity = rng.uniform(0.0, 0.3, (len(regions), t))
        affinity[np.arange(len(regions)), rng.permutation(t)[: len(regions)]] = 1.0
    lo, hi = variants_per_item
    counts = rng.integers(lo, hi + 1, n_items)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    themes = np.concatenate([rng.choice(t, size=c, replace=False) for c in counts])
    variant_ids = np.concatenate([[f"v{j}" for j in range(c)] for c in counts])
    return World(
        taste=taste,
        user_ids=np.array([f"u{u}" for u in range(n_users)]),
        segment=segment,
        region=region,
        item_ids=np.array([f"i{i}" for i in range(n_items)]),
        genre=rng.integers(0, t, n_items),
        item_effect=rng.normal(0.0, 0.3, n_items),
        indptr=indptr,
        variant_ids=variant_ids.astype(str),
        variant_theme=themes.astype(np.int64),
        variant_effect=rng.normal(0.0, 0.15, len(themes)),
        base=base,
        gain=gain,
        store_affinity=affinity,
        store_names=regions if store_signal else (),
    )


def browsing_history(
    world: World, per_user: int = 30, sharpness: float = 3.0, seed: int = 1
) -> pd.DataFrame:
    """Interactions: users view items of the genres they like (for the CF model)."""
    rng = np.random.default_rng(seed)
    rows_u, rows_i = [], []
    for u in range(len(world.user_ids)):
        w = np.exp(sharpness * world.taste[u, world.genre])
        items = rng.choice(len(world.item_ids), size=per_user, replace=False, p=w / w.sum())
        rows_u.append(np.full(per_user, u))
        rows_i.append(items)
    users = np.concatenate(rows_u)
    items = np.concatenate(rows_i)
    return pd.DataFrame(
        {
            "user_id": world.user_ids[users],
            "item_id": world.item_ids[items],
            "timestamp": 1_700_000_000 + np.arange(len(users)),
            "event_type": "view",
        }
    )


@dataclass(frozen=True)
class Stream:
    """The same requests and click luck for every policy (common random numbers)."""

    users: np.ndarray  # [R]
    slates: np.ndarray  # [R, k] item rows
    luck: np.ndarray  # [R, k] uniform: a click happens when luck < p
    stores: np.ndarray | None = None  # [R] store row per request (store worlds)

    def store(self, r: int) -> int:
        return -1 if self.stores is None else int(self.stores[r])


def make_stream(world: World, n_requests: int, slate: int = 20, seed: int = 2) -> Stream:
    rng = np.random.default_rng(seed)
    users = rng.integers(0, len(world.user_ids), n_requests)
    n_items = len(world.item_ids)
    slates = np.argsort(rng.random((n_requests, n_items)), axis=1)[:, :slate]
    luck = rng.random((n_requests, slate))
    stores = None
    if world.store_affinity is not None:  # drawn after: the taste world's stream is unchanged
        stores = rng.integers(0, len(world.store_names), n_requests)
    return Stream(users, slates, luck, stores)


def oracle_variants(world: World, user: int, items: np.ndarray, store: int = -1) -> np.ndarray:
    """The variant row with the highest true click probability, per item."""
    out = np.empty(len(items), dtype=np.int64)
    for j, item in enumerate(items):
        rows = world.variants_of(int(item))
        out[j] = rows[int(np.argmax(world.click_prob(user, rows, store)))]
    return out
