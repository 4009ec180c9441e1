"""One chunk of users through the serving pipeline's stages, in batch.

Export adds no business rule of its own: :func:`recsvc.pipeline.recommend.rank_users`
(users, candidates, filters, top-k, fall-backs) and
:func:`recsvc.pipeline.artwork.choose_artwork` are the calls a Recommend request makes.
This module only feeds them chunks, picks artwork without exploration (best posterior
mean), and lays the result out as Arrow columns.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from feature_store.base import OnlineStore
from recsvc.bandit.base import ArtworkPolicy
from recsvc.bandit.registry import DefaultVariantPolicy
from recsvc.bundle import release_mapped_pages
from recsvc.export.rows import RowReader
from recsvc.pipeline.artwork import artwork_context, choose_artwork
from recsvc.pipeline.model import SOURCE_PROFILE, SOURCE_REGION, ServingModel
from recsvc.pipeline.order import Ranked
from recsvc.pipeline.recommend import rank_users
from recsvc.pipeline.users import UserBatch, UserInput

# How each exported user was served, for the summary and the manifest.
KIND_KNOWN = "known"  # in the model (CF vector, maybe folded in with recent events)
KIND_FOLDED = "new_with_events"  # unknown to the model, vector folded in from store events
KIND_COLD = "cold_start_features"  # ranked from profile/users-file features (cold start)
KIND_REGION = "popularity_region"  # no usable features except a known region
KIND_GLOBAL = "popularity_global"  # unknown everywhere: global popularity
# A cold user's kind is the source of its first item (what actually served it).
_KIND_OF_SOURCE = {SOURCE_PROFILE: KIND_COLD, SOURCE_REGION: KIND_REGION}

SCRATCH_BYTES = 16 << 20  # pipeline temporaries per sub-batch (see ChunkRunner)


@dataclass
class ChunkResult:
    table: pa.Table
    kinds: Counter[str]
    short_users: int  # users that got fewer than k items (the catalog ran out)


def user_kinds(model: ServingModel, batch: UserBatch, ranked: Ranked) -> list[str]:
    kinds = []
    for b in range(len(batch)):
        if batch.rows[b] >= 0:
            kinds.append(KIND_KNOWN)
        elif batch.personal[b]:
            kinds.append(KIND_FOLDED)
        elif ranked.counts[b] > 0:
            kinds.append(_KIND_OF_SOURCE.get(int(ranked.sources[b, 0]), KIND_GLOBAL))
        elif 0 <= batch.regions[b] < model.n_regions:  # nothing to show: by what it knew
            kinds.append(KIND_REGION)
        else:
            kinds.append(KIND_GLOBAL)
    return kinds


class ArtworkPicker:
    """Best-posterior-mean artwork (``explore=False``) for ranked lists, chunk at a time."""

    def __init__(
        self, model: ServingModel, policy: ArtworkPolicy, store: OnlineStore | None
    ) -> None:
        self.model = model
        self.policy = policy
        self.store = store
        self._fallback = model.policy("default")

    def pick(self, batch: UserBatch, ranked: Ranked) -> np.ndarray:
        """[B, k] object array of variant ids ("" where no artwork or no item)."""
        if isinstance(self.policy, DefaultVariantPolicy):
            # The default policy's choice is a table of each item's default variant; one
            # gather of it is what keeps artwork off the export's critical path.
            variants = self.policy.variants
            return np.where(ranked.items >= 0, variants[np.maximum(ranked.items, 0)], "")
        return self._pick_per_user(batch, ranked)

    def _pick_per_user(self, batch: UserBatch, ranked: Ranked) -> np.ndarray:
        item_ids = self.model.item_id_list
        contexts = [artwork_context(batch, b) for b in range(len(batch))]
        lists = [
            [item_ids[j] for j in ranked.items[b, : ranked.counts[b]].tolist()]
            for b in range(len(batch))
        ]
        read = None
        if self.store is not None:
            # One counter read for the whole chunk instead of one per user; a store error
            # stops the export (a campaign file with silently default artwork is worse).
            keys = sorted(
                {
                    key
                    for ctx, ids in zip(contexts, lists, strict=True)
                    for key in self.policy.counter_keys(ctx, ids)
                }
            )
            counters = self.store.get_counters(keys) if keys else {}
            read = _prefetched(counters)
        out = np.full(ranked.items.shape, "", dtype=object)
        for b, (ctx, ids) in enumerate(zip(contexts, lists, strict=True)):
            if ids:
                decisions, _, _ = choose_artwork(
                    self.policy, self._fallback, ctx, ids, read, explore=False
                )
                out[b, : len(ids)] = [d.variant_id for d in decisions]
        return out


def _prefetched(
    counters: Mapping[str, Mapping[str, float]],
) -> Callable[[Sequence[str]], Mapping[str, Mapping[str, float]]]:
    def read(keys: Sequence[str]) -> Mapping[str, Mapping[str, float]]:
        return {key: counters.get(key, {}) for key in keys}

    return read


def to_table(
    model: ServingModel,
    batch: UserBatch,
    ranked: Ranked,
    variants: np.ndarray,
    item_dictionary: pa.Array | None = None,
) -> pa.Table:
    """Rows ``user_id, rank, item_id, score, artwork_variant_id, model_version``."""
    counts = ranked.counts
    k = ranked.items.shape[1]
    keep = np.arange(k)[None, :] < counts[:, None]
    owner = np.repeat(np.arange(len(batch)), counts)
    user_ids = pa.array([u.user_id for u in batch.inputs], pa.string()).take(pa.array(owner))
    rank = np.broadcast_to(np.arange(1, k + 1, dtype=np.int32), ranked.items.shape)[keep]
    items = ranked.items[keep]
    if item_dictionary is None:
        item_dictionary = pa.array(model.item_id_list, pa.string())
    # Item and version columns as dictionary lookups decoded in C++, not per-row Python.
    item_col = pa.DictionaryArray.from_arrays(
        pa.array(items.astype(np.int32)), item_dictionary
    ).cast(pa.string())
    version = pa.DictionaryArray.from_arrays(
        pa.array(np.zeros(len(items), np.int32)), pa.array([model.version])
    ).cast(pa.string())
    return pa.table(
        {
            "user_id": user_ids,
            "rank": pa.array(rank, pa.int32()),
            "item_id": item_col,
            "score": pa.array(ranked.scores[keep].astype(np.float32), pa.float32()),
            "artwork_variant_id": pa.array(variants[keep].tolist(), pa.string()),
            "model_version": version,
        }
    )


class ChunkRunner:
    """Recommend + artwork + Arrow layout for successive chunks of one export.

    A chunk (the unit of I/O and progress) is ranked in sub-batches sized so that the
    pipeline's per-batch temporaries (users x candidates x factors floats) stay small:
    above glibc's 32 MiB mmap threshold every chunk would page-fault a fresh buffer in,
    which measured several times slower than the arithmetic itself.
    """

    def __init__(
        self,
        model: ServingModel,
        k: int,
        artwork: ArtworkPicker,
        scratch_bytes: int = SCRATCH_BYTES,
    ) -> None:
        self.model = model
        self.k = k
        self.artwork = artwork
        # A mapped bundle's per-user rows are read per sub-batch with explicit reads.
        self.rows = RowReader(model) if RowReader.applies(model) else None
        self._items = pa.array(model.item_id_list, pa.string())
        cands = model.bundle.candidates
        width = int(np.diff(cands.indptr).max()) if cands.shape[0] else 1
        per_user = max(width, k) * model.item_factors.shape[1] * 4
        self.sub_batch = int(np.clip(scratch_bytes // max(per_user, 1), 64, 1024))

    def run(self, inputs: Sequence[UserInput]) -> ChunkResult:
        tables, kinds, short = [], Counter[str](), 0
        for start in range(0, len(inputs), self.sub_batch):
            part = inputs[start : start + self.sub_batch]
            model = self.rows.model_for(part) if self.rows is not None else self.model
            batch, ranked, _ = rank_users(model, part, self.k)
            variants = self.artwork.pick(batch, ranked)
            # An artwork policy may read user rows through the map (e.g. LinTS factors).
            release_mapped_pages(self.model.bundle)
            tables.append(to_table(self.model, batch, ranked, variants, self._items))
            kinds.update(user_kinds(self.model, batch, ranked))
            short += int(np.count_nonzero(ranked.counts < self.k))
        table = pa.concat_tables(tables) if tables else _empty_table()
        return ChunkResult(table, kinds, short)

    def close(self) -> None:
        if self.rows is not None:
            self.rows.close()


def _empty_table() -> pa.Table:
    return pa.table(
        {
            "user_id": pa.array([], pa.string()),
            "rank": pa.array([], pa.int32()),
            "item_id": pa.array([], pa.string()),
            "score": pa.array([], pa.float32()),
            "artwork_variant_id": pa.array([], pa.string()),
            "model_version": pa.array([], pa.string()),
        }
    )
