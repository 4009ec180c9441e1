"""Variant lookup and the Monte Carlo choice shared by the bandit policies.

A request asks about ~20 items with a few variants each. The per-item work (reading the
counters, the posterior of each variant) is one Python pass over the items, written into
two flat lists laid out [variant, item]; the Monte Carlo draws for all variants of all
items are then one numpy pass (a few calls: scale, shift, argmax, bincount), and
the served variant of each item is drawn in the same Python pass that emits the decisions.

Why not numpy throughout: a request is ~60 cells, and inside the server every numpy call
on such small arrays runs with cold caches (the server does gRPC, protobuf and SQLite work
between two choices). Thirty-odd small numpy calls cost twice as much there as in a warm
loop; the Python interpreter loop stays hot. docs/benchmarks/bandit.md has the profile.

This module is also the reference for the compiled choice (``_choice.c``, ``COMPILED``):
with the extension built the policies run the same steps (posteriors, draws, counts, served
draw) as one C call per request, with the same arithmetic, so both make exactly the same
decisions (tests/bandit/test_compiled_choice.py); without it they run the code here.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from feature_store.base import CounterDelta
from recsvc.bandit.base import ArtworkDecision
from recsvc.bundle import ArtworkCatalog

try:  # the compiled choice (recsvc/bandit/_choice.c, built by `make install`)
    from recsvc.bandit import _choice as COMPILED
except ImportError:  # a source tree without the built extension: the reference code below
    COMPILED = None  # type: ignore[assignment]

NO_THEME = ""
NEG_INF = float("-inf")


def compiled_kernel(enabled: bool, vmax: int) -> Any:
    """The compiled choice module when it is built, wanted and fits the catalog, else None
    (the policies then run the numpy/Python reference: same arithmetic, same decisions)."""
    if not enabled or COMPILED is None or vmax > COMPILED.MAX_VARIANTS:
        return None
    return COMPILED


@dataclass(frozen=True, slots=True)
class ItemVariants:
    """Static facts about one item's variants (cached per item)."""

    variant_ids: tuple[str, ...]
    n_fields: tuple[str, ...]  # "<variant>:n" counter fields (impressions)
    c_fields: tuple[str, ...]  # "<variant>:c" counter fields (clicks)
    r_fields: tuple[str, ...]  # "<variant>:r" counter fields (residual sums, linear policy)
    theme_codes: tuple[int, ...]  # [k] index into VariantIndex.themes
    start: int = 0  # the first variant's row in the catalog (VariantIndex.codes)
    k: int = 0  # number of variants
    row: int = 0  # the item's catalog row (CellTable rows)


class VariantIndex:
    """Item id -> its variants and their ``theme_column`` codes, from an ArtworkCatalog."""

    def __init__(
        self,
        catalog: ArtworkCatalog | None,
        item_index: Mapping[str, int],
        theme_column: str = "theme",
    ) -> None:
        self._catalog = catalog
        self._item_index = item_index
        raw = None
        if catalog is not None and theme_column in catalog.attributes:
            raw = np.asarray(catalog.attributes[theme_column]).astype(str)
        # Code 0 is "no theme" so variants without the attribute still get an arm.
        names = sorted(set(raw.tolist()) - {NO_THEME}) if raw is not None else []
        self.themes: tuple[str, ...] = (NO_THEME, *names)
        lookup = {t: i for i, t in enumerate(self.themes)}
        self._codes = (
            np.array([lookup[t] for t in raw.tolist()], dtype=np.int64) if raw is not None else None
        )
        n_variants = int(catalog.indptr[-1]) if catalog is not None and len(catalog.indptr) else 0
        # Theme code of every catalog variant (+ one spare row for padding): a request's
        # [items, max_variants] theme matrix is one fancy-index, not a loop per item.
        self.codes = np.zeros(n_variants + 1, dtype=np.int64)
        if self._codes is not None:
            self.codes[:n_variants] = self._codes
        self._cache: dict[str, ItemVariants | None] = {}
        # True when no item has two variants of the same theme (see LinearThompsonPolicy).
        self.distinct_themes = _distinct_per_item(catalog, self.codes[:n_variants])
        # The catalog's largest variant count: every request is padded to it.
        self.vmax = max(1, int(np.diff(catalog.indptr).max())) if catalog and n_variants else 1
        self.n_rows = len(catalog.indptr) - 1 if catalog is not None and len(catalog.indptr) else 0
        # [row, vmax] theme codes of each catalog row's variants (padding: code 0).
        k = np.diff(catalog.indptr) if catalog is not None and self.n_rows else np.zeros(0, int)
        self.k_rows = np.ascontiguousarray(k, dtype=np.int64)  # [row] variant count
        cols = np.arange(self.vmax)
        real = cols < k[:, None]
        self.real_rows = real  # [row, vmax] bool: a real variant (not padding)
        starts = np.asarray(catalog.indptr[:-1]) if catalog is not None else np.zeros(0, int)
        self.code_rows = self.codes[np.where(real, starts[:, None] + cols, n_variants)]

    def lookup(self, item_ids: Sequence[str]) -> list[ItemVariants | None]:
        """:meth:`get` for every id (one dict read each once the items are cached)."""
        cache = self._cache
        try:
            return [cache[i] for i in item_ids]
        except KeyError:
            return [self.get(i) for i in item_ids]

    def get(self, item_id: str) -> ItemVariants | None:
        """The item's variants, or None when the item is unknown or has no artwork."""
        try:
            return self._cache[item_id]
        except KeyError:
            pass
        found = self._build(item_id)
        # Bounded: one entry per catalog item (unknown ids are not cached).
        if found is not None or len(self._cache) < 100_000:
            self._cache[item_id] = found
        return found

    def _build(self, item_id: str) -> ItemVariants | None:
        cat = self._catalog
        idx = self._item_index.get(item_id)
        if cat is None or idx is None or idx + 1 >= len(cat.indptr):
            return None
        lo, hi = int(cat.indptr[idx]), int(cat.indptr[idx + 1])
        if lo >= hi:
            return None
        ids = tuple(str(v) for v in cat.variant_ids[lo:hi])
        codes = tuple(self._codes[lo:hi].tolist()) if self._codes is not None else (0,) * (hi - lo)
        return ItemVariants(
            variant_ids=ids,
            n_fields=tuple(f"{v}:n" for v in ids),
            c_fields=tuple(f"{v}:c" for v in ids),
            r_fields=tuple(f"{v}:r" for v in ids),
            theme_codes=codes,
            start=lo,
            k=hi - lo,
            row=idx,
        )

    def has_variant(self, item_id: str, variant_id: str) -> bool:
        """True when ``variant_id`` is one of ``item_id``'s variants (events are checked)."""
        found = self.get(item_id)
        return found is not None and variant_id in found.variant_ids


def _distinct_per_item(catalog: ArtworkCatalog | None, codes: np.ndarray) -> bool:
    if catalog is None or len(codes) == 0:
        return True
    item = np.repeat(np.arange(len(catalog.indptr) - 1), np.diff(catalog.indptr))
    pairs = item.astype(np.int64) * (int(codes.max()) + 1) + codes
    return len(np.unique(pairs)) == len(pairs)


@dataclass(slots=True)
class Cells:
    """One request's variants as flat lists laid out [variant j, item i] (index j * n + i),
    padded to the catalog's largest variant count: means (padding -inf) then sds."""

    items: list[ItemVariants | None]  # per requested item (None: no artwork)
    found: list[ItemVariants]  # the items with artwork, in request order
    ids: Sequence[str]  # their ids
    mean_sd: list[float]  # 2 * vmax * n values
    vmax: int
    table: np.ndarray | None = None  # or the same as [2, vmax, n] rows of a CellTable
    choice: list[list[float]] | None = None  # cached choice probabilities per found item
    source: CellTable | None = None  # the CellTable whose rows ``table`` holds, if any

    @property
    def n(self) -> int:
        return len(self.found)


def new_cells(index: VariantIndex, item_ids: Sequence[str]) -> Cells:
    items = index.lookup(item_ids)
    if None in items:
        pairs = [(i, it) for i, it in zip(item_ids, items, strict=True) if it is not None]
        ids, found = [i for i, _ in pairs], [it for _, it in pairs]
    else:
        ids, found = item_ids, items  # type: ignore[assignment]
    size = index.vmax * len(found)
    return Cells(items, found, ids, [NEG_INF] * size + [0.0] * size, index.vmax)


class NormalPool:
    """Standard normal draws for the Monte Carlo choice, generated once.

    A call reads ``S × items × variants`` consecutive float32 values from a random offset of
    a fixed pool instead of generating them (generation was a third of the choice's CPU).
    Within a call the values are independent draws; across calls the windows may overlap,
    so two calls' Monte Carlo frequencies are not independent. That does not touch the
    logged propensities: the served variant is drawn from the call's win counts with fresh
    randomness (:func:`serve`), so the propensity is exactly its probability.

    Size: 65,536 values (256 KiB) stay in the shared cache between requests inside the
    server, where a 4 MiB pool made every call's window a cold read (~25 µs of a ~250 µs
    cold choice). A call's window is ~5,000 values (20 items × 4 variants × 64 draws), so a
    cell's draws still come from ~60,000 offsets; a larger request draws fresh values.
    """

    def __init__(self, rng: np.random.Generator, size: int = 1 << 16) -> None:
        self.values = rng.standard_normal(size, dtype=np.float32)

    def start(self, n: int, u: float) -> int | None:
        """Where the window of ``n`` draws picked by the uniform ``u`` starts in
        :attr:`values` (None: the pool is too small for ``n``)."""
        room = len(self.values) - n + 1
        return int(u * room) if room > 0 else None

    def window(self, n: int, u: float) -> np.ndarray:
        """``n`` draws starting at the offset picked by the uniform ``u``."""
        start = self.start(n, u)
        if start is None:
            return np.random.default_rng(int(u * 2**32)).standard_normal(n, dtype=np.float32)
        return self.values[start : start + n]


def uniforms(n: int, rng: np.random.Generator | None, prng: random.Random) -> list[float]:
    """``n`` uniforms: from ``rng`` when the caller passes one, else the policy's own."""
    if rng is not None:
        out: list[float] = rng.random(n).tolist()
        return out
    draw = prng.random
    return [draw() for _ in range(n)]


def gaussian_wins(
    cells: Cells, noise: np.ndarray, shared: np.ndarray | None = None
) -> list[list[int]]:
    """Per item, the number of the S Monte Carlo draws each variant wins (padded to vmax).

    The scores are independent ``N(mean, sd²)`` per cell (``noise`` holds vmax × n × S
    standard normal draws) plus, optionally, ``shared`` [vmax, n, S] draws common to
    several cells (one theme draw per sample). Each draw's winner is its first maximum
    (``argmax``): with sd > 0 a tie between real variants has probability 0, and padding
    (-inf) never wins. The counts are one ``bincount``: with cold caches (inside the server)
    each numpy call costs ~10 µs, and this takes 3 fewer than the packed-bit count.
    """
    vmax, n = cells.vmax, cells.n
    if cells.table is not None:
        ms = cells.table[:, :, :, None]
    else:
        ms = np.array(cells.mean_sd, dtype=np.float32).reshape(2, vmax, n, 1)
    samples = noise.reshape(vmax, n, -1) * ms[1]
    samples += ms[0]
    if shared is not None:
        samples += shared
    best = samples.argmax(axis=0)  # [n, S]: the winning variant of each draw
    best += _row_offsets(n, vmax)
    wins: list[list[int]] = np.bincount(best.ravel(), minlength=n * vmax).reshape(n, vmax).tolist()
    return wins


_OFFSETS: dict[tuple[int, int], np.ndarray] = {}


def _row_offsets(n: int, vmax: int) -> np.ndarray:
    """[n, 1] first flat bin of each item (``i * vmax``), cached per request shape."""
    key = (n, vmax)
    found = _OFFSETS.get(key)
    if found is None:
        if len(_OFFSETS) > 4096:
            _OFFSETS.clear()
        found = _OFFSETS[key] = (np.arange(n, dtype=np.intp) * vmax)[:, None]
    return found


def padded(first: list[float], second: list[float], vmax: int) -> list[float]:
    """One CellTable row: ``first`` padded with -inf, then ``second`` padded with 0."""
    gap = vmax - len(first)
    return [*first, *([NEG_INF] * gap), *second, *([0.0] * gap)]


class CellTable:
    """Cell values cached per catalog row: [row, 2, vmax] (means, padding -inf; then sds)
    and when each row was computed. A policy re-reads an item's counters only when its row
    is older than its refresh interval (``counter_keys`` asks for those items only), so a
    request's cells are one ``take`` of this table instead of a pass over its counters."""

    def __init__(self, n_rows: int, vmax: int) -> None:
        self.values = np.zeros((n_rows, 2, vmax), np.float32)
        self.values[:, 0, :] = -np.inf
        self.stamp = [NEG_INF] * n_rows
        # Per row, the choice probabilities of its variants (policies that cache them).
        self.choice: list[list[float] | None] = [None] * n_rows

    def put(self, rows: list[int], values: list[float], stamps: list[float]) -> np.ndarray:
        """Store ``len(rows)`` rows at once: ``values`` holds, per row, vmax means (padding
        -inf) then vmax sds (see :func:`padded`). Returns them as [len(rows), 2, vmax]."""
        vmax = self.values.shape[2]
        block = np.array(values, np.float32).reshape(len(rows), 2, vmax)
        if rows:
            self.values[rows] = block
            stamp = self.stamp
            for r, t in zip(rows, stamps, strict=True):
                stamp[r] = t
        return block

    def rows(self, cells: Cells) -> np.ndarray:
        """[2, vmax, n] values of the request's items."""
        r = np.fromiter((it.row for it in cells.found), np.int64, cells.n)
        out: np.ndarray = self.values.take(r, axis=0).transpose(1, 2, 0)
        return out


_BITS = hasattr(np, "bitwise_count")  # numpy >= 2.0


def count_max(samples: np.ndarray) -> np.ndarray:
    """[vmax, n, S] scores -> [n, vmax] number of samples in which each cell is the max."""
    top = samples == samples.max(axis=0)
    if _BITS and top.shape[2] % 64 == 0:
        # 64 samples = one machine word: pack the flags and count set bits.
        bits = np.bitwise_count(np.packbits(top, axis=2).view(np.uint64))
        wins: np.ndarray = (bits[:, :, 0] if bits.shape[2] == 1 else bits.sum(axis=2)).T
        return wins
    counted: np.ndarray = top.sum(axis=2).T
    return counted


def floors(vmax: int, floor: float, share: float) -> list[float]:
    """Per-variant floor by variant count k (index k): ``min(max(floor, share / k), 1 / k)``.

    ``share`` is the part of the choices made uniformly at random whatever k is, so the
    importance weight of a uniform target policy is at most ``1 / share``."""
    return [0.0] + [min(max(floor, share / k), 1.0 / k) for k in range(1, vmax + 1)]


def serve(
    cells: Cells,
    item_ids: Sequence[str],
    wins: list[list[int]],
    u: list[float],
    floor_by_k: Sequence[float],
) -> list[ArtworkDecision]:
    """One decision per requested item, the served variant drawn with the uniforms ``u``.

    With per-variant floor ``f`` (by the item's variant count k) the served distribution is
    ``f + (1 - k f) wins / total``: the probability logged is exactly that of the variant
    served. Without a floor integer wins are accumulated exactly, so a variant with no wins
    is never drawn. (The compiled kernel's draw, ``_choice.c``, is this code in C.)"""
    chosen: list[int] = []
    props: list[float] = []
    for r, it in enumerate(cells.found):
        w, k = wins[r], it.k
        total = sum(w)
        target = u[r] * total
        f = floor_by_k[k]
        if f > 0.0:
            a, b = 1.0 - k * f, f * total
            acc = 0.0
            for j in range(k):
                wj = w[j] * a + b
                acc += wj
                if acc > target:
                    break
            chosen.append(j)
            props.append(wj / total)
            continue
        acc_i = 0
        j = 0
        for j in range(k):
            acc_i += w[j]
            if acc_i > target:
                break
        else:  # u * total rounded up to total (u within 2^-53 of 1): the last variant that won
            j = max(jj for jj in range(k) if w[jj] > 0)
        chosen.append(j)
        props.append(w[j] / total)
    return decisions(cells, item_ids, chosen, props)


def decisions(
    cells: Cells, item_ids: Sequence[str], chosen: list[int], props: list[float]
) -> list[ArtworkDecision]:
    """One decision per requested item from the chosen variant index and its propensity per
    found item (items without artwork: no variant, propensity 1)."""
    if len(cells.found) == len(item_ids):
        return [
            _decision(item_id, it.variant_ids[j], p)
            for item_id, it, j, p in zip(item_ids, cells.found, chosen, props, strict=True)
        ]
    out = []
    r = 0
    for item_id, it in zip(item_ids, cells.items, strict=True):
        if it is None:
            out.append(_decision(item_id, "", 1.0))
            continue
        out.append(_decision(item_id, it.variant_ids[chosen[r]], props[r]))
        r += 1
    return out


def probabilities(cells: Cells, wins: list[list[int]]) -> np.ndarray:
    """[n, vmax] choice probabilities (before any floor) from the win counts."""
    w = np.array(wins, dtype=np.float64).reshape(cells.n, cells.vmax)
    out: np.ndarray = w / w.sum(axis=1, keepdims=True)
    return out


def greedy(cells: Cells, item_ids: Sequence[str]) -> list[ArtworkDecision]:
    """Non-exploring decisions: best mean per item (first variant wins ties), propensity 1."""
    n = cells.n
    if cells.table is not None:
        best = cells.table[0].argmax(axis=0).tolist()
    else:
        means = cells.mean_sd
        best = []
        for r, found in enumerate(cells.found):
            row = [means[j * n + r] for j in range(found.k)]
            best.append(row.index(max(row)))
    return decisions(cells, item_ids, best, [1.0] * n)


def sample_counts(counts: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, one column per row) from integer win ``counts`` ([n, vmax]): column j
    of row i with probability counts[i, j] / row total. Integer arithmetic, so a column
    with no wins is never drawn (an exact tie counts for both: row totals may exceed S)."""
    total = counts.sum(axis=1)
    if counts.size == 0:
        return counts.astype(np.float64), np.zeros(len(counts), dtype=np.int64)
    target = (rng.random(len(total)) * total).astype(np.int64)
    chosen = (np.cumsum(counts, axis=1) <= target[:, None]).sum(axis=1)
    return counts / total[:, None], chosen


def choice_counts(samples: np.ndarray) -> np.ndarray:
    """[S, n, vmax] sampled scores (padding -inf) -> [n, vmax] number of samples each wins."""
    _, n, vmax = samples.shape
    winners = samples.argmax(axis=2) + vmax * np.arange(n)[None, :]
    return np.bincount(winners.ravel(), minlength=n * vmax).reshape(n, vmax)


def choice_frequencies(samples: np.ndarray) -> np.ndarray:
    """[S, n, vmax] sampled scores (padding -inf) -> [n, vmax] share of samples each wins."""
    return choice_counts(samples) / float(len(samples))


_new = object.__new__
_set_item, _set_variant, _set_prop = (
    ArtworkDecision.__dict__[name].__set__  # slot descriptors: skip the frozen __setattr__
    for name in ("item_id", "variant_id", "propensity")
)


def _decision(item_id: str, variant_id: str, propensity: float) -> ArtworkDecision:
    """``ArtworkDecision(...)`` at a fraction of the cost (20 per SelectArtwork call)."""
    d: ArtworkDecision = _new(ArtworkDecision)
    _set_item(d, item_id)
    _set_variant(d, variant_id)
    _set_prop(d, propensity)
    return d


_set_key, _set_field, _set_amount = (
    CounterDelta.__dict__[name].__set__ for name in ("key", "field", "amount")
)


def delta(key: str, field: str, amount: float) -> CounterDelta:
    """``CounterDelta(key, field, amount)`` at a fraction of the cost (a lints impression
    moves ~70 counter fields)."""
    d: CounterDelta = _new(CounterDelta)
    _set_key(d, key)
    _set_field(d, field)
    _set_amount(d, amount)
    return d


def sample_rows(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One column index per row of ``probs`` ([n, vmax], rows summing to 1), drawn from it."""
    if probs.size == 0:
        return np.zeros(len(probs), dtype=np.int64)
    u = rng.random(len(probs)) * probs.sum(axis=1)
    chosen = (np.cumsum(probs, axis=1) <= u[:, None]).sum(axis=1)
    # Float round-off at the top end must not land on a zero-probability (padding) column.
    positive = probs > 0
    last = positive.shape[1] - 1 - np.argmax(positive[:, ::-1], axis=1)
    return np.minimum(chosen, last)


def accumulate(
    deltas: Iterable[CounterDelta], into: dict[str, dict[str, float]] | None = None
) -> dict[str, dict[str, float]]:
    """Sum CounterDeltas into counter hashes (offline training from logs, e.g. OPE)."""
    out: dict[str, dict[str, float]] = {} if into is None else into
    for d in deltas:
        h = out.setdefault(d.key, {})
        h[d.field] = h.get(d.field, 0.0) + d.amount
    return out
