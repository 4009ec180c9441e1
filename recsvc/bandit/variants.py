"""Variant lookup and the vectorized Monte Carlo choice shared by the bandit policies.

A request asks about ~20 items with a few variants each. Policies lay the variants of one
request out as a padded ``[items, max_variants]`` matrix (padding = ``-inf`` scores), so
sampling, argmax and propensity counting are a handful of numpy calls per request, not a
Python loop per sample.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from feature_store.base import CounterDelta
from recsvc.bandit.base import ArtworkDecision
from training.bundle import ArtworkCatalog

NO_THEME = ""


@dataclass(frozen=True, slots=True)
class ItemVariants:
    """Static facts about one item's variants (cached per item)."""

    variant_ids: tuple[str, ...]
    n_fields: tuple[str, ...]  # "<variant>:n" counter fields (impressions)
    c_fields: tuple[str, ...]  # "<variant>:c" counter fields (clicks)
    r_fields: tuple[str, ...]  # "<variant>:r" counter fields (residual sums, linear policy)
    theme_codes: np.ndarray  # [k] int index into VariantIndex.themes
    start: int = 0  # the first variant's row in the catalog (VariantIndex.codes)
    k: int = 0  # number of variants
    nc_fields: tuple[str, ...] = ()  # n_fields + c_fields: one pass over a counter hash
    nr_fields: tuple[str, ...] = ()  # n_fields + r_fields


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
        self._build_tables(catalog, item_index)

    def _build_tables(self, catalog: ArtworkCatalog | None, item_index: Mapping[str, int]) -> None:
        """Per-catalog tables a request indexes with one fancy-index each (built once).

        Row ``r`` is a catalog item row; the extra last row (``self.none``) stands for an item
        without artwork (k = 0). ``vmax`` is the catalog's largest variant count: every
        table is padded to it.
        """
        indptr = (
            np.asarray(catalog.indptr, dtype=np.int64)
            if catalog is not None and len(catalog.indptr)
            else np.zeros(1, np.int64)
        )
        k = np.diff(indptr)
        n_rows = len(k)
        self.none = n_rows
        self.vmax = max(1, int(k.max()) if n_rows else 1)
        self.k = np.concatenate([k, [0]]).astype(np.int64)
        self.starts = np.concatenate([indptr[:-1], [0]]).astype(np.int64)
        cols = np.arange(self.vmax)
        mask = cols < self.k[:, None]
        spare = len(self.codes) - 1  # padding reads the spare row of ``codes`` (code 0)
        codes = self.codes[np.where(mask, self.starts[:, None] + cols, spare)]
        # One int table [k, start, k - 1, theme codes...] and one float32 table (0 for a real
        # variant, -inf for padding): a request's layout is two ``take``s.
        self.table = np.concatenate(
            [self.k[:, None], self.starts[:, None], self.k[:, None] - 1, codes], axis=1
        )
        self.penalty_rows = np.where(mask, 0.0, -np.inf).astype(np.float32)
        self._floor_tables: dict[tuple[float, float], np.ndarray] = {}
        self.variant_list: list[str] = (
            [str(v) for v in catalog.variant_ids] if catalog is not None else []
        )
        # Item id -> catalog row, only for items that have artwork.
        self.row_of: dict[str, int] = {
            item: row for item, row in item_index.items() if 0 <= row < n_rows and k[row] > 0
        }
        # Counter field names per row, padded to vmax with "" (never a real field: every
        # real one ends in ":n", ":c" or ":r"): reading a request's counters is one flat
        # pass that reshapes straight to [items, 2, vmax]. Built lazily, per row.
        self._fields: dict[str, list[tuple[str, ...] | None]] = {
            kind: [None] * (n_rows + 1) for kind in ("nc", "nr")
        }
        self._fields["nc"][n_rows] = self._fields["nr"][n_rows] = ("",) * (2 * self.vmax)

    def floor_table(self, floor: float, share: float = 0.0) -> np.ndarray:
        """[rows + 1, 1 + vmax] per catalog row: ``1 - k f`` then ``f`` for each real variant
        (0 for padding), with the per-variant floor ``f = min(max(floor, share / k), 1 / k)``
        (see :func:`served_weights`)."""
        key = (floor, share)
        found = self._floor_tables.get(key)
        if found is None:
            k = np.maximum(self.k, 1).astype(np.float64)
            f = np.minimum(np.maximum(floor, share / k), 1.0 / k)
            real = self.penalty_rows == 0.0
            found = np.concatenate([(1.0 - k * f)[:, None], f[:, None] * real], axis=1)
            self._floor_tables[key] = found
        return found

    def fields(self, kind: str, rows: Sequence[int]) -> list[tuple[str, ...]]:
        """The padded ``(first..., second...)`` counter fields of each catalog row:
        ``kind`` "nc" = (impressions, clicks), "nr" = (impressions, residual sums)."""
        table = self._fields[kind]
        out = [table[r] for r in rows]
        if None in out:
            second = kind[1]
            pad = ("",)
            for r in rows:
                if table[r] is None:
                    lo, k = int(self.starts[r]), int(self.k[r])
                    ids = self.variant_list[lo : lo + k]
                    gap = pad * (self.vmax - k)
                    table[r] = (
                        *(f"{v}:n" for v in ids),
                        *gap,
                        *(f"{v}:{second}" for v in ids),
                        *gap,
                    )
            out = [table[r] for r in rows]
        return out  # type: ignore[return-value]

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
        codes = (
            self._codes[lo:hi].copy() if self._codes is not None else np.zeros(hi - lo, np.int64)
        )
        n_fields = tuple(f"{v}:n" for v in ids)
        c_fields = tuple(f"{v}:c" for v in ids)
        r_fields = tuple(f"{v}:r" for v in ids)
        return ItemVariants(
            variant_ids=ids,
            n_fields=n_fields,
            c_fields=c_fields,
            r_fields=r_fields,
            theme_codes=codes,
            start=lo,
            k=hi - lo,
            nc_fields=n_fields + c_fields,
            nr_fields=n_fields + r_fields,
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
class Layout:
    """The padded variant matrix of one request: its rows of the VariantIndex tables.

    Every request is padded to the catalog's largest variant count ``vmax`` (no per-request
    max and slicing): a catalog with one item of many variants makes every request wider."""

    rows: Sequence[int]  # positions in item_ids that have artwork
    cat: list[int]  # their catalog rows (VariantIndex tables)
    r: np.ndarray  # the same as an array
    counts: np.ndarray  # [n] variants per row
    starts: np.ndarray  # [n] each row's first variant in the catalog
    last: np.ndarray  # [n] counts - 1
    penalty: np.ndarray  # [n, vmax] float32: 0 for real variants, -inf for padding
    codes: np.ndarray  # [n, vmax] theme codes (VariantIndex.themes); padding: code 0

    @property
    def empty(self) -> bool:
        return not self.cat

    @property
    def mask(self) -> np.ndarray:
        """[n, vmax] bool: a real variant."""
        return self.penalty == 0.0


_ARANGE = np.arange(1 << 12)


def layout(index: VariantIndex, item_ids: Sequence[str]) -> Layout:
    """The request's rows of the per-catalog tables: two ``take``s, no loop over items
    beyond the id -> row lookup."""
    none = index.none
    get = index.row_of.get
    cat = [get(item_id, none) for item_id in item_ids]
    rows: Sequence[int] = range(len(cat))
    if none in cat:
        rows = [pos for pos, r in enumerate(cat) if r != none]
        cat = [cat[pos] for pos in rows]
    r = np.fromiter(cat, np.int64, len(cat))
    t = index.table.take(r, axis=0)
    pen = index.penalty_rows.take(r, axis=0)
    return Layout(rows, cat, r, t[:, 0], t[:, 1], t[:, 2], pen, t[:, 3:])


def gather(
    index: VariantIndex,
    lay: Layout,
    hashes: Sequence[Mapping[str, float]],
    kind: str,
    blocks: int = 1,
) -> np.ndarray:
    """[blocks, n, 2, vmax] counters in one flat pass: ``hashes`` is ``blocks`` runs of one
    hash per layout row (e.g. item level, then context bucket); ``kind`` "nc" reads
    (impressions, clicks), "nr" (impressions, residual sums). Absent fields and padding: 0."""
    fields = index.fields(kind, lay.cat)
    if blocks > 1:
        fields = fields * blocks
    flat = [h.get(f, 0.0) for h, fs in zip(hashes, fields, strict=True) for f in fs]
    # float32: the counters only parameterize the draws (exact up to 2^24 per field).
    return np.fromiter(flat, np.float32, len(flat)).reshape(blocks, len(lay.cat), 2, index.vmax)


class NormalPool:
    """Standard normal draws for the Monte Carlo choice, generated once.

    A call reads ``S × items × variants`` consecutive float32 values from a random offset of
    a fixed pool instead of generating them (generation was a third of the choice's CPU).
    Within a call the values are independent draws; across calls the windows may overlap,
    so two calls' Monte Carlo frequencies are not independent. That does not touch the
    logged propensities: the served variant is drawn from the call's win counts with fresh
    randomness (:func:`serve`), so the propensity is exactly its probability.
    """

    def __init__(self, rng: np.random.Generator, size: int = 1 << 20) -> None:
        self.values = rng.standard_normal(size, dtype=np.float32)

    def window(self, n: int, u: float, rng: np.random.Generator) -> np.ndarray:
        """``n`` draws starting at the offset picked by the uniform ``u``."""
        room = len(self.values) - n + 1
        if room <= 0:
            return rng.standard_normal(n, dtype=np.float32)
        start = int(u * room)
        return self.values[start : start + n]

    def draw(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        return self.window(int(np.prod(shape)), float(rng.random()), rng).reshape(shape)


_BITS = hasattr(np, "bitwise_count")  # numpy >= 2.0


def win_counts(
    mean: np.ndarray,
    sd: np.ndarray,
    lay: Layout,
    noise: np.ndarray,
    shared: np.ndarray | None = None,
) -> np.ndarray:
    """[n, vmax] integer Monte Carlo wins over independent Gaussian scores ``N(mean, sd²)``.

    ``noise`` holds vmax × n × S standard normal draws; ``shared`` ([vmax, n, S]) adds draws
    common to several cells (one theme draw per sample). The samples are laid out
    [variant, item, sample] so that "which variant wins" is one max over the first axis and
    one comparison. Exact ties count for every tied variant (row totals may exceed S).
    """
    n, vmax = lay.penalty.shape
    # float32 inputs (the counters are read as float32) need no conversion here.
    samples = noise.reshape(vmax, n, -1) * sd.T.astype(np.float32, copy=False)[:, :, None]
    samples += (mean + lay.penalty).T.astype(np.float32, copy=False)[:, :, None]
    if shared is not None:
        samples += shared
    return count_max(samples)


def count_max(samples: np.ndarray) -> np.ndarray:
    """[vmax, n, S] scores -> [n, vmax] number of samples in which each cell is the max."""
    top = samples == samples.max(axis=0)
    if _BITS and top.shape[2] % 64 == 0:
        # 64 samples = one machine word: pack the flags and count set bits.
        words = np.packbits(top, axis=2).view(np.uint64)
        bits = np.bitwise_count(words)
        wins: np.ndarray = (bits[:, :, 0] if bits.shape[2] == 1 else bits.sum(axis=2)).T
        return wins
    counted: np.ndarray = top.sum(axis=2).T
    return counted


def served_weights(
    index: VariantIndex, lay: Layout, wins: np.ndarray, floor: float, share: float = 0.0
) -> np.ndarray:
    """[n, vmax] unnormalized probability of serving each variant: the wins themselves
    (no floor, no share), or mixed with the uniform distribution so that every variant of
    an item with k variants gets at least ``f = min(max(floor, share / k), 1 / k)``:
    ``f + (1 - k f) wins / total``, times the row total. ``share`` is the part of the
    choices made uniformly at random whatever k is, so the importance weight of a uniform
    target policy is at most ``1 / share``."""
    if floor <= 0.0 and share <= 0.0:
        return wins
    ft = index.floor_table(floor, share).take(lay.r, axis=0)
    w: np.ndarray = wins * ft[:, :1] + wins.sum(axis=1)[:, None] * ft[:, 1:]
    return w


def draw_served(lay: Layout, weights: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(chosen column per row, its probability) from ``weights`` and one uniform per row.

    Integer wins (floor 0) are compared exactly, so a variant with no wins is never drawn;
    with a floor every real variant has weight > 0. ``u * top`` can round up to ``top``
    (u within 2^-53 of 1): that is clamped to the row's last real variant."""
    cum = weights.cumsum(axis=1)
    top = cum[:, -1]
    chosen = np.minimum((cum <= (u * top)[:, None]).sum(axis=1), lay.last)
    props = weights[_ARANGE[: len(chosen)], chosen] / top
    return chosen, props


def serve(
    index: VariantIndex,
    lay: Layout,
    item_ids: Sequence[str],
    wins: np.ndarray,
    floor: float,
    u: np.ndarray,
    share: float = 0.0,
) -> list[ArtworkDecision]:
    """Decisions from the Monte Carlo ``wins``: the exploration floor applied, the served
    variant drawn with the uniforms ``u`` (one per row), its exact probability logged."""
    if lay.empty:
        return _emit(index, lay, item_ids, [], [])
    chosen, props = draw_served(lay, served_weights(index, lay, wins, floor, share), u)
    return _emit(index, lay, item_ids, (lay.starts + chosen).tolist(), props.tolist())


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


def _emit(
    index: VariantIndex,
    lay: Layout,
    item_ids: Sequence[str],
    picks: list[int],
    props: list[float],
) -> list[ArtworkDecision]:
    """One decision per requested item; ``picks`` are catalog variant positions per row."""
    vids = index.variant_list
    if len(lay.cat) == len(item_ids):  # every item has artwork: rows are 0..n-1
        return [
            _decision(item_id, vids[j], p)
            for item_id, j, p in zip(item_ids, picks, props, strict=True)
        ]
    slot = dict(zip(lay.rows, range(len(lay.rows)), strict=True))
    out = []
    for pos, item_id in enumerate(item_ids):
        i = slot.get(pos)
        if i is None:
            out.append(_decision(item_id, "", 1.0))
        else:
            out.append(_decision(item_id, vids[picks[i]], props[i]))
    return out


def greedy(
    index: VariantIndex, lay: Layout, item_ids: Sequence[str], means: np.ndarray
) -> list[ArtworkDecision]:
    """Non-exploring decisions: best mean per item (first variant wins ties), propensity 1."""
    if lay.empty:
        return _emit(index, lay, item_ids, [], [])
    best = (means + lay.penalty).argmax(axis=1)
    return _emit(index, lay, item_ids, (lay.starts + best).tolist(), [1.0] * len(best))


def accumulate(
    deltas: Iterable[CounterDelta], into: dict[str, dict[str, float]] | None = None
) -> dict[str, dict[str, float]]:
    """Sum CounterDeltas into counter hashes (offline training from logs, e.g. OPE)."""
    out: dict[str, dict[str, float]] = {} if into is None else into
    for d in deltas:
        h = out.setdefault(d.key, {})
        h[d.field] = h.get(d.field, 0.0) + d.amount
    return out
