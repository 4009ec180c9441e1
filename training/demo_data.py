"""A synthetic storefront in the input data contract (``recsvc demo-data``).

What it encodes, so models have something to find:
- taste clusters: every item belongs to one cluster (clusters lean to a few categories);
  every user has a primary and a secondary cluster and draws most interactions from them,
  so personalization beats popularity;
- regions: items are available only in some regions (a share everywhere) and users only
  touch items available in their region; each region likes some categories more; a user's
  clusters depend on region, age bucket and gender, so a cold-start model that knows only
  those beats global popularity;
- popularity: a heavy-tailed item popularity inside every pool.

Scale: users are generated and written in chunks of ``CHUNK_USERS`` (pyarrow writers), items
are sampled from precomputed per-(region, cluster) pools with one vectorized
``searchsorted``; no users x items matrix exists, memory stays bounded by one chunk.
Deterministic for a seed (each chunk has its own seeded stream).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from training.errors import TrainingError

REGIONS: tuple[str, ...] = (
    "US-9", "US-5", "US-1", "CA", "MX", "BR", "GB", "DE", "FR", "ES", "JP", "IN",
)  # fmt: skip
REGION_SHARE = np.array([14, 10, 8, 8, 6, 7, 8, 9, 8, 6, 8, 8], dtype=np.float64)
CATEGORIES: tuple[str, ...] = (
    "electronics", "books", "games", "music", "movies", "toys", "sports", "home",
    "garden", "beauty", "fashion", "grocery", "outdoors", "kitchen", "pets", "office",
)  # fmt: skip
THEMES: tuple[str, ...] = ("comedy", "drama", "action", "romance", "minimal", "bold")
AGE_BUCKETS: tuple[str, ...] = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
AGE_SHARE = np.array([16, 24, 21, 17, 13, 9], dtype=np.float64)
GENDERS: tuple[str, ...] = ("f", "m", "x")
GENDER_SHARE = np.array([48, 48, 4], dtype=np.float64)
PRICE_BANDS: tuple[str, ...] = ("low", "mid", "high")
EVENT_TYPES: tuple[str, ...] = ("view", "click", "add_to_cart", "purchase")
# Event mix per source (primary cluster, secondary, region-wide): users go further down the
# funnel for what they like most, so weighting purchases above views carries signal.
EVENT_SHARE = np.array([[50, 28, 12, 10], [62, 25, 8, 5], [76, 18, 4, 2]], dtype=np.float64)

END_EPOCH = 1_767_225_600  # 2026-01-01T00:00:00Z: fixed so output depends on the seed only
SPAN_SECONDS = 90 * 86_400
CHUNK_USERS = 50_000
DEFAULT_INTERACTIONS_PER_USER = 20
# Where a user's interactions come from: primary cluster, secondary cluster, region-wide.
SOURCE_SHARE = np.array([0.55, 0.2, 0.25])
EVERYWHERE_SHARE = 0.4
MAX_ARTWORK, MIN_ARTWORK = 6, 2

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class DemoSummary:
    """What ``generate`` wrote."""

    out_dir: Path
    users: int
    items: int
    interactions: int
    artwork: int
    files: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass(frozen=True)
class _Catalog:
    item_ids: np.ndarray  # [I] object str
    cluster: np.ndarray  # [I] int
    category: np.ndarray  # [I] int
    available: np.ndarray  # [R, I] bool
    pool_items: np.ndarray  # concatenated pool members (item index)
    pool_keys: np.ndarray  # pool index + cumulative share inside the pool, increasing
    pool_redirect: np.ndarray  # [R*K + R] pool actually used (empty pools -> region pool)
    cluster_prior: np.ndarray  # [A, G, R, K] P(cluster | age, gender, region)
    n_clusters: int


def n_clusters_for(items: int) -> int:
    """Taste clusters: about 20 items each, between 4 and 24."""
    return int(min(24, max(4, items // 20)))


def generate(
    out_dir: Path,
    users: int = 10_000,
    items: int = 2_000,
    interactions: int | None = None,
    seed: int = 0,
    fmt: str = "csv",
    progress: Progress | None = None,
) -> DemoSummary:
    """Write interactions/users/items/artwork for a synthetic storefront into ``out_dir``.

    ``interactions`` is a target (about ``DEFAULT_INTERACTIONS_PER_USER`` per user by
    default); the exact count is in the summary. Files appear under their final names only
    when complete.
    """
    _check_args(out_dir, users, items, interactions, fmt)
    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    target = users * DEFAULT_INTERACTIONS_PER_USER if interactions is None else interactions
    catalog = _make_catalog(items, seed)
    ext = f".{fmt}"
    # interactions last: its presence means the set is complete (the Makefile tests it).
    order = ("users", "items", "artwork", "interactions")
    finals = {name: out_dir / f"{name}{ext}" for name in order}
    temps = {name: path.with_name(f".{path.name}.partial") for name, path in finals.items()}
    n_rows = 0
    try:
        _write_table(temps["items"], _items_table(catalog, seed), fmt)
        artwork = _artwork_table(catalog, seed)
        _write_table(temps["artwork"], artwork, fmt)
        with (
            _Writer(temps["users"], fmt) as user_writer,
            _Writer(temps["interactions"], fmt) as event_writer,
        ):
            chunks = range(0, users, CHUNK_USERS)
            for done, first in enumerate(chunks, start=1):
                count = min(CHUNK_USERS, users - first)
                share = count / users
                user_table, event_table = _chunk(
                    catalog, seed, (first, count, users), target * share
                )
                user_writer.write(user_table)
                event_writer.write(event_table)
                n_rows += event_table.num_rows
                if progress is not None:
                    progress(done, len(chunks))
        for name, temp in temps.items():
            os.replace(temp, finals[name])
    finally:
        for temp in temps.values():
            temp.unlink(missing_ok=True)
    return DemoSummary(
        out_dir=out_dir,
        users=users,
        items=items,
        interactions=n_rows,
        artwork=artwork.num_rows,
        files=finals,
        seconds=time.perf_counter() - start,
    )


def _check_args(out_dir: Path, users: int, items: int, interactions: int | None, fmt: str) -> None:
    if users < 1 or items < 1:
        raise TrainingError(f"--users and --items must be >= 1 (got {users}, {items})")
    if interactions is not None and interactions < users:
        raise TrainingError(
            f"--interactions must be >= --users ({users}) so every user has history"
        )
    if fmt not in ("csv", "parquet"):
        raise TrainingError(f"--format must be csv or parquet, got {fmt!r}")
    other = "parquet" if fmt == "csv" else "csv"
    clash = [p.name for p in out_dir.glob(f"*.{other}") if p.stem in _CONTRACT_NAMES]
    if clash:
        raise TrainingError(
            f"{out_dir} already holds {', '.join(sorted(clash))}; the loader refuses both "
            f"formats side by side: remove them or use --format {other}"
        )


_CONTRACT_NAMES = ("interactions", "users", "items", "artwork")


# --- catalog ------------------------------------------------------------------------------


def _ids(prefix: str, start: int, count: int, total: int) -> np.ndarray:
    width = max(5, len(str(total - 1)))
    return np.array([f"{prefix}{i:0{width}d}" for i in range(start, start + count)], dtype=object)


def _make_catalog(items: int, seed: int) -> _Catalog:
    rng = np.random.default_rng([seed, 0xCA7])
    n_regions, n_cats, k = len(REGIONS), len(CATEGORIES), n_clusters_for(items)
    cluster = rng.integers(0, k, size=items)
    # Each cluster leans on a few categories, so item features carry taste signal.
    cluster_cats = rng.dirichlet(np.full(n_cats, 0.3), size=k)
    category = _draw_rows(rng, cluster_cats[cluster])
    popularity = rng.lognormal(0.0, 1.1, size=items)
    everywhere = rng.random(items) < EVERYWHERE_SHARE
    everywhere[np.argmax(popularity)] = True  # no region is ever left without items
    available = _availability(rng, everywhere, n_regions)
    affinity = np.exp(rng.normal(0.0, 0.9, size=(n_regions, n_cats)))
    prior_logits = (
        rng.normal(0.0, 1.0, size=(len(AGE_BUCKETS), 1, 1, k))
        + rng.normal(0.0, 0.7, size=(1, len(GENDERS), 1, k))
        + rng.normal(0.0, 1.2, size=(1, 1, n_regions, k))
    )
    prior = np.exp(prior_logits)
    prior /= prior.sum(axis=-1, keepdims=True)
    pool_items, pool_keys, redirect = _pools(cluster, category, popularity, available, affinity, k)
    return _Catalog(
        item_ids=_ids("i", 0, items, items),
        cluster=cluster,
        category=category,
        available=available,
        pool_items=pool_items,
        pool_keys=pool_keys,
        pool_redirect=redirect,
        cluster_prior=prior,
        n_clusters=k,
    )


def _availability(rng: np.random.Generator, everywhere: np.ndarray, n_regions: int) -> np.ndarray:
    """[R, I] availability: everywhere items in all regions, others in 1-5 regions."""
    items = everywhere.size
    n_in = rng.integers(1, 6, size=items)
    # A random permutation of regions per item; the first n_in of it are where it sells.
    ranks = np.argsort(rng.random((items, n_regions)), axis=1)
    available = (ranks < n_in[:, None]).T
    available[:, everywhere] = True
    return available


def _draw_rows(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One categorical draw per row of ``probs`` ([n, m], rows sum to 1)."""
    cumulative = np.cumsum(probs, axis=1)
    u = rng.random(probs.shape[0]) * cumulative[:, -1]
    return np.minimum((cumulative < u[:, None]).sum(axis=1), probs.shape[1] - 1)


def _pools(
    cluster: np.ndarray,
    category: np.ndarray,
    popularity: np.ndarray,
    available: np.ndarray,
    affinity: np.ndarray,
    k: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sampling pools: (region, cluster) for r*K+z, whole region for R*K+r.

    Members and cumulative shares are concatenated; a draw ``pool + u`` (u in [0, 1))
    finds its item with one searchsorted over ``keys``.
    """
    n_regions = available.shape[0]
    members: list[np.ndarray] = []
    keys: list[np.ndarray] = []
    redirect = np.arange(n_regions * k + n_regions)
    for r in range(n_regions):
        weight = popularity * affinity[r, category]
        in_region = available[r]
        for z in range(k):
            pool = np.flatnonzero(in_region & (cluster == z))
            if pool.size == 0:
                redirect[r * k + z] = n_regions * k + r
            members.append(pool)
            keys.append(_pool_keys(r * k + z, weight[pool]))
    for r in range(n_regions):
        pool = np.flatnonzero(available[r])
        # Region-wide draws lean harder on the region's favourite categories.
        weight = popularity[pool] * affinity[r, category[pool]] ** 2
        members.append(pool)
        keys.append(_pool_keys(n_regions * k + r, weight))
    return np.concatenate(members), np.concatenate(keys), redirect


def _pool_keys(index: int, weight: np.ndarray) -> np.ndarray:
    if weight.size == 0:
        return np.empty(0)
    shares = np.cumsum(weight) / weight.sum()
    # Keys stay strictly inside (index, index + 1] so pools never overlap.
    return index + np.minimum(shares, 1.0 - 1e-12)


def _items_table(catalog: _Catalog, seed: int) -> pa.Table:
    rng = np.random.default_rng([seed, 0x17E])
    items = catalog.item_ids.size
    n_brands = max(8, items // 40)
    # Brands belong to a category, so brand and category agree.
    brand = catalog.category * (n_brands // len(CATEGORIES) + 1) + rng.integers(
        0, n_brands // len(CATEGORIES) + 1, size=items
    )
    everywhere = np.asarray(catalog.available.all(axis=0), dtype=bool)
    columns = [list(np.array(REGIONS)[catalog.available[:, i]]) for i in range(items)]
    regions = ["" if everywhere[i] else "|".join(columns[i]) for i in range(items)]
    return pa.table(
        {
            "item_id": pa.array(catalog.item_ids, pa.string()),
            "regions": pa.array(regions, pa.string()),
            "category": pa.array(np.array(CATEGORIES, dtype=object)[catalog.category]),
            "brand": pa.array([f"brand-{b:04d}" for b in brand], pa.string()),
            "price_band": pa.array(
                np.array(PRICE_BANDS, dtype=object)[rng.integers(0, 3, size=items)]
            ),
        }
    )


def _artwork_table(catalog: _Catalog, seed: int) -> pa.Table:
    rng = np.random.default_rng([seed, 0xA27])
    items = catalog.item_ids.size
    counts = rng.integers(MIN_ARTWORK, MAX_ARTWORK + 1, size=items)
    # Distinct themes per item: the first n of a random permutation of the themes.
    themes = np.argsort(rng.random((items, len(THEMES))), axis=1)
    item_index = np.repeat(np.arange(items), counts)
    slot = np.arange(item_index.size) - np.repeat(np.cumsum(counts) - counts, counts)
    item_ids = catalog.item_ids[item_index]
    variant_ids = [f"{item}-v{j + 1}" for item, j in zip(item_ids, slot, strict=True)]
    return pa.table(
        {
            "item_id": pa.array(item_ids, pa.string()),
            "variant_id": pa.array(variant_ids, pa.string()),
            "theme": pa.array(np.array(THEMES, dtype=object)[themes[item_index, slot]]),
        }
    )


# --- users and interactions ---------------------------------------------------------------


def _chunk(
    catalog: _Catalog, seed: int, span: tuple[int, int, int], target_rows: float
) -> tuple[pa.Table, pa.Table]:
    """Users ``first .. first+count`` (of ``total``) and their interactions."""
    first, count, total = span
    rng = np.random.default_rng([seed, 0x05E, first])
    k, n_regions = catalog.n_clusters, len(REGIONS)
    region = rng.choice(n_regions, size=count, p=REGION_SHARE / REGION_SHARE.sum())
    age = rng.choice(len(AGE_BUCKETS), size=count, p=AGE_SHARE / AGE_SHARE.sum())
    gender = rng.choice(len(GENDERS), size=count, p=GENDER_SHARE / GENDER_SHARE.sum())
    prior = catalog.cluster_prior[age, gender, region]
    primary = _draw_rows(rng, prior)
    secondary = _draw_rows(rng, prior)
    user_ids = _ids("u", first, count, total)
    users = pa.table(
        {
            "user_id": pa.array(user_ids, pa.string()),
            "region": pa.array(np.array(REGIONS, dtype=object)[region]),
            "age_bucket": pa.array(np.array(AGE_BUCKETS, dtype=object)[age]),
            "gender": pa.array(np.array(GENDERS, dtype=object)[gender]),
        }
    )
    mean = max(target_rows / count, 1.0)
    # Heavy-tailed activity, at least 3 rows where the target allows it.
    floor = 3 if mean >= 4 else 1
    sigma = 0.6
    activity = rng.lognormal(-(sigma**2) / 2, sigma, size=count) * (mean - floor)
    per_user = floor + rng.poisson(np.maximum(activity, 0.0))
    user = np.repeat(np.arange(count), per_user)
    source = rng.choice(3, size=user.size, p=SOURCE_SHARE)
    pool = np.where(
        source == 0,
        region[user] * k + primary[user],
        np.where(source == 1, region[user] * k + secondary[user], n_regions * k + region[user]),
    )
    pool = catalog.pool_redirect[pool]
    position = np.searchsorted(catalog.pool_keys, pool + rng.random(user.size), side="left")
    item = catalog.pool_items[np.minimum(position, catalog.pool_items.size - 1)]
    timestamp = END_EPOCH - SPAN_SECONDS + rng.integers(0, SPAN_SECONDS, size=user.size)
    event = _draw_rows(rng, (EVENT_SHARE / EVENT_SHARE.sum(axis=1, keepdims=True))[source])
    order = np.lexsort((timestamp, user))
    user, item, timestamp, event = user[order], item[order], timestamp[order], event[order]
    events = pa.table(
        {
            "user_id": pa.array(user_ids, pa.string()).take(pa.array(user)),
            "item_id": pa.array(catalog.item_ids, pa.string()).take(pa.array(item)),
            "timestamp": pa.array(timestamp.astype(np.int64)),
            "event_type": pa.DictionaryArray.from_arrays(
                pa.array(event.astype(np.int8)), pa.array(EVENT_TYPES)
            ).cast(pa.string()),
        }
    )
    return users, events


# --- writing ------------------------------------------------------------------------------


class _Writer:
    """Appends pyarrow tables to one CSV or Parquet file."""

    def __init__(self, path: Path, fmt: str) -> None:
        self.path, self.fmt = path, fmt
        self._writer: pacsv.CSVWriter | pq.ParquetWriter | None = None

    def write(self, table: pa.Table) -> None:
        if self._writer is None:
            if self.fmt == "csv":
                options = pacsv.WriteOptions(quoting_style="needed")
                self._writer = pacsv.CSVWriter(self.path, table.schema, write_options=options)
            else:
                self._writer = pq.ParquetWriter(self.path, table.schema)
        self._writer.write_table(table)

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._writer is not None:
            self._writer.close()


def _write_table(path: Path, table: pa.Table, fmt: str) -> None:
    with _Writer(path, fmt) as writer:
        writer.write(table)


def stderr_progress(label: str = "demo-data") -> Progress:
    """A progress callback: a tqdm bar on a terminal, else a log line every ~10%."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar: list[tqdm] = []

        def update_bar(done: int, total: int) -> None:
            if not bar:
                bar.append(tqdm(total=total, desc=label, unit="chunk", file=sys.stderr))
            bar[0].update(done - bar[0].n)
            if done == total:
                bar[0].close()

        return update_bar
    last = [-1]

    def log(done: int, total: int) -> None:
        step = done * 10 // total
        if step != last[0]:
            last[0] = step
            print(f"{label}: {done}/{total} user chunks", file=sys.stderr, flush=True)

    return log
