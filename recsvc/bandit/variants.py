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


@dataclass(frozen=True, slots=True)
class Layout:
    """The padded variant matrix of one request."""

    rows: list[int]  # positions in item_ids that have artwork
    items: list[ItemVariants]
    counts: np.ndarray  # [n] variants per row
    mask: np.ndarray  # [n, vmax] bool: a real variant
    penalty: np.ndarray  # [n, vmax] 0 for real variants, -inf for padding (added to scores)
    codes: np.ndarray  # [n, vmax] theme codes (VariantIndex.themes); padding: code 0


_COLUMNS = np.arange(64)


def layout(index: VariantIndex, item_ids: Sequence[str]) -> Layout:
    get = index.get
    found = [get(item_id) for item_id in item_ids]
    if None in found:
        rows = [pos for pos, it in enumerate(found) if it is not None]
        items = [it for it in found if it is not None]
    else:
        rows, items = list(range(len(found))), found  # type: ignore[assignment]
    if not items:
        empty = np.zeros((0, 1))
        return Layout(rows, items, np.zeros(0, np.int64), empty.astype(bool), empty, empty)
    counts = np.array([it.k for it in items])
    vmax = int(counts.max())
    cols = _COLUMNS[:vmax] if vmax <= len(_COLUMNS) else np.arange(vmax)
    mask = cols < counts[:, None]
    # Padding points at the spare last row of ``index.codes`` (code 0).
    starts = np.array([it.start for it in items])
    codes = index.codes[np.where(mask, starts[:, None] + cols, len(index.codes) - 1)]
    penalty = np.where(mask, 0.0, -np.inf)
    return Layout(rows, items, counts, mask, penalty, codes)


def gather_two(
    lay: Layout, hashes: Sequence[Mapping[str, float]], fields: str
) -> tuple[np.ndarray, np.ndarray]:
    """Two [n, vmax] counter matrices in one pass: ``fields`` is "nc_fields" (impressions,
    clicks) or "nr_fields" (impressions, residual sums); padding 0."""
    pairs = zip(hashes, lay.items, strict=True)
    flat = [h.get(f, 0.0) for h, it in pairs for f in getattr(it, fields)]
    n, vmax = lay.mask.shape
    out = np.zeros((n, 2, vmax))
    # Row-major over [item, kind, variant] is exactly each item's field order (n..., c...).
    out[np.broadcast_to(lay.mask[:, None, :], out.shape)] = flat
    return out[:, 0], out[:, 1]


class NormalPool:
    """Standard normal draws for the Monte Carlo choice, generated once.

    A call reads ``S × items × variants`` consecutive float32 values from a random offset of
    a fixed pool instead of generating them (generation was a third of the choice's CPU).
    Within a call the values are independent draws; across calls the windows may overlap,
    so two calls' Monte Carlo frequencies are not independent. That does not touch the
    logged propensities: the served variant is drawn from the call's frequencies with fresh
    randomness (:func:`sample_counts`), so the propensity is exactly its probability.
    """

    def __init__(self, rng: np.random.Generator, size: int = 1 << 20) -> None:
        self.values = rng.standard_normal(size, dtype=np.float32)

    def draw(self, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
        n = int(np.prod(shape))
        if n > len(self.values):
            return rng.standard_normal(shape, dtype=np.float32)
        start = int(rng.integers(0, len(self.values) - n + 1))
        return self.values[start : start + n].reshape(shape)


def gaussian_choice(
    mean: np.ndarray,
    sd: np.ndarray,
    lay: Layout,
    noise: np.ndarray,
    rng: np.random.Generator,
    shared: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Monte Carlo choice over independent Gaussian scores ``N(mean, sd²)`` ([n, vmax]).

    ``noise`` holds vmax × n × S standard normal draws; ``shared`` ([vmax, n, S]) adds draws
    common to several cells (one theme draw per sample). The samples are laid out
    [variant, item, sample] so that "which variant wins" is one max over the first axis and
    one comparison (a third of argmax + bincount over a short last axis). Returns
    (probabilities, one choice per row drawn from them).
    """
    vmax, n = lay.mask.shape[1], lay.mask.shape[0]
    samples = noise.reshape(vmax, n, -1) * sd.T.astype(np.float32)[:, :, None]
    samples += (mean + lay.penalty).T.astype(np.float32)[:, :, None]
    if shared is not None:
        samples += shared
    counts = (samples == samples.max(axis=0)).sum(axis=2).T  # [n, vmax] wins
    return sample_counts(counts, rng)


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
    lay: Layout, item_ids: Sequence[str], chosen: list[int], props: list[float]
) -> list[ArtworkDecision]:
    if len(lay.rows) == len(item_ids):  # every item has artwork: rows are 0..n-1
        return [
            _decision(item_id, item.variant_ids[c], p)
            for item_id, item, c, p in zip(item_ids, lay.items, chosen, props, strict=True)
        ]
    slot = dict(zip(lay.rows, range(len(lay.rows)), strict=True))
    out = []
    for pos, item_id in enumerate(item_ids):
        i = slot.get(pos)
        if i is None:
            out.append(_decision(item_id, "", 1.0))
        else:
            out.append(_decision(item_id, lay.items[i].variant_ids[chosen[i]], props[i]))
    return out


def decide(
    lay: Layout,
    item_ids: Sequence[str],
    chosen: np.ndarray,
    probs: np.ndarray,
    floor: float,
    rng: np.random.Generator,
) -> list[ArtworkDecision]:
    """Apply the exploration floor and emit one decision per requested item.

    With floor ``f`` and ``k`` variants the served distribution is ``f + (1 - k f) p``: with
    probability ``k f`` a uniformly random variant, else the policy's own choice ``chosen``
    (drawn from ``p``, see :func:`sample_rows`). The propensity logged is that mixture's
    probability of the variant actually served, so importance weights stay exact.
    """
    if not lay.items:
        return _emit(lay, item_ids, [], [])
    mix = served_distribution(lay, probs, floor)
    if floor > 0.0:
        k = lay.counts
        uniform = rng.random(len(k)) < k * np.minimum(floor, 1.0 / k)
        random_pick = (rng.random(len(k)) * k).astype(np.int64)
        chosen = np.where(uniform, random_pick, chosen)
    props = mix[np.arange(len(chosen)), chosen]
    return _emit(lay, item_ids, chosen.tolist(), props.tolist())


def served_distribution(lay: Layout, probs: np.ndarray, floor: float) -> np.ndarray:
    """[n, vmax] probability of serving each variant: the policy's ``probs`` mixed with the
    uniform distribution so every variant gets at least ``floor`` (capped at 1/k)."""
    if floor <= 0.0:
        return probs
    k = lay.counts.astype(np.float64)
    f = np.minimum(floor, 1.0 / k)
    mix = f[:, None] + (1.0 - k * f)[:, None] * probs
    return np.where(lay.mask, mix, 0.0)


def greedy(lay: Layout, item_ids: Sequence[str], means: np.ndarray) -> list[ArtworkDecision]:
    """Non-exploring decisions: best mean per item (first variant wins ties), propensity 1."""
    if not lay.items:
        return _emit(lay, item_ids, [], [])
    best = (means + lay.penalty).argmax(axis=1)
    return _emit(lay, item_ids, best.tolist(), [1.0] * len(best))


def accumulate(
    deltas: Iterable[CounterDelta], into: dict[str, dict[str, float]] | None = None
) -> dict[str, dict[str, float]]:
    """Sum CounterDeltas into counter hashes (offline training from logs, e.g. OPE)."""
    out: dict[str, dict[str, float]] = {} if into is None else into
    for d in deltas:
        h = out.setdefault(d.key, {})
        h[d.field] = h.get(d.field, 0.0) + d.amount
    return out
