"""``recsvc audience``: the N users most likely to want each item (a batch segment job).

Items are searched against a FAISS inner-product index of user vectors
(:mod:`recsvc.export.user_index`, cached in the bundle). Users outside the segment or
suppressed are excluded inside the search (an ID selector, so they cost nothing); the
per-pair rules (already interacted, unavailable in the user's region, suppressed pairs)
are the serving pipeline's :func:`recsvc.pipeline.filters.allowed_mask`, applied to the
candidates found, with a wider search for the items whose list came up short.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pyarrow as pa

from feature_store.base import OnlineStore, StoredEvent
from recsvc.bundle import Bundle, release_mapped_pages
from recsvc.errors import UsageError
from recsvc.export.job import load_artifacts, manifest_value
from recsvc.export.output import AtomicTableWriter, check_writable
from recsvc.export.progress import Progress
from recsvc.export.sources import Suppression, read_id_list, read_suppression
from recsvc.export.user_index import load_or_build_user_index
from recsvc.pipeline.filters import allowed_mask, region_allows
from recsvc.pipeline.model import ServingModel, build_model
from recsvc.pipeline.users import UserInput, prepare_users
from recsvc.segments import parse_segment

AUDIENCE_SCHEMA = pa.schema(
    [
        ("item_id", pa.string()),
        ("rank", pa.int32()),
        ("user_id", pa.string()),
        ("score", pa.float32()),
    ]
)
MAX_TOP = 1_000_000
ITEM_BLOCK = 64  # items per FAISS batch search
_MAX_RESULT_CELLS = 1 << 22  # users x items per search call (~50 MB of results)


@dataclass(frozen=True)
class AudienceOptions:
    artifacts: Path
    out: Path
    top: int
    items: Path | None = None
    item_filter: str | None = None
    segment: str | None = None
    suppress: Path | None = None
    include_seen: bool = False
    progress: bool = True
    # The online store whose recent events apply the seen rule as serving does (a user who
    # bought the item online is no audience for it); None = the bundle's history only.
    feature_store: str | None = None
    seen_events: frozenset[str] | None = None
    allow_empty: bool = False  # else no eligible user (segment, suppression) is refused


@dataclass
class AudienceJob:
    options: AudienceOptions
    bundle: Bundle
    model: ServingModel
    item_rows: np.ndarray  # [N] int64, output order
    unknown_items: list[str]
    eligible: np.ndarray  # [U] bool: in the segment and not suppressed
    suppression: Suppression
    index: Any
    index_source: str
    timings: dict[str, float]
    store: OnlineStore | None = None

    def __post_init__(self) -> None:
        self._seen_per_item = np.bincount(
            self.bundle.user_items.indices, minlength=len(self.bundle.item_ids)
        )
        release_mapped_pages(self.bundle)
        self._masks: dict[tuple[int, ...] | None, np.ndarray] = {}
        # user -> recent events, read once per job (a user is a candidate for many items)
        self._recent: dict[str, tuple[StoredEvent, ...]] = {}

    def run(self, log: TextIO | None = None) -> dict[str, Any]:
        log = log if log is not None else sys.stderr
        started = time.perf_counter()
        progress = Progress(
            len(self.item_rows), "item", "audience", stream=log, enabled=self.options.progress
        )
        short = 0
        try:
            with AtomicTableWriter(self.options.out, AUDIENCE_SCHEMA) as writer:
                for block in _blocks(self.item_rows, ITEM_BLOCK):
                    users, scores, counts = self.search(block)
                    short += int(np.count_nonzero(counts < min(self.options.top, self.n_eligible)))
                    release_mapped_pages(self.bundle)  # the block's seen-item rows
                    writer.write(self._table(block, users, scores, counts))
                    progress.update(len(block))
                self.timings["search_and_write_s"] = round(time.perf_counter() - started, 3)
                return writer.commit(self._manifest(writer.rows, short))
        finally:
            progress.close()
            if self.store is not None:
                with contextlib.suppress(Exception):
                    self.store.close()

    def _recent_events(self, user_id: str) -> tuple[StoredEvent, ...]:
        if self.store is None:
            return ()
        found = self._recent.get(user_id)
        if found is None:
            state, _ = self.store.read_user(user_id)
            found = self._recent[user_id] = tuple(state.recent_events)
        return found

    @property
    def n_eligible(self) -> int:
        return int(np.count_nonzero(self.eligible))

    # -- search --------------------------------------------------------------------------

    def search(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Top users per item under every rule: ([B, N] user rows -1 padded, scores, counts).

        Items are searched in groups that share a regional availability, each with an ID
        selector of the users who may get them at all (eligible and in a region where
        they are sold), so a regional item does not scan past every user elsewhere. The
        pipeline's filters still judge every candidate pair; the selector only prunes.
        """
        top = self.options.top
        out_users = np.full((len(items), top), -1, np.int64)
        out_scores = np.zeros((len(items), top), np.float32)
        counts = np.zeros(len(items), np.int64)
        for positions, mask in self._groups(items):
            self._search_group(items, positions, mask, out_users, out_scores, counts)
        return out_users, out_scores, counts

    def _search_group(
        self,
        items: np.ndarray,
        positions: np.ndarray,
        mask: np.ndarray,
        out_users: np.ndarray,
        out_scores: np.ndarray,
        counts: np.ndarray,
    ) -> None:
        top = self.options.top
        n_allowed = int(np.count_nonzero(mask))
        selector = _Selector(mask) if n_allowed < len(mask) else None
        want = min(top, n_allowed)
        pending = positions
        fetch = min(n_allowed, top + max(32, top // 2) + self._max_seen(items[positions]))
        while len(pending) and fetch > 0:
            # Bound one search's result arrays (rows x fetch) whatever the escalation.
            group = max(1, _MAX_RESULT_CELLS // fetch)
            for start in range(0, len(pending), group):
                part = pending[start : start + group]
                users, scores = self._faiss(items[part], fetch, selector)
                ok = self._allowed(items[part], users)
                for pos, b in enumerate(part):
                    keep = np.flatnonzero(ok[pos])[:top]
                    n = len(keep)
                    out_users[b, :n] = users[pos, keep]
                    out_scores[b, :n] = scores[pos, keep]
                    counts[b] = n
            if fetch >= n_allowed:
                break
            pending = pending[counts[pending] < want]
            fetch = min(n_allowed, fetch * 4)

    def _max_seen(self, items: np.ndarray) -> int:
        """Most users who interacted with one of ``items`` (the seen rule may drop them)."""
        if self.options.include_seen or not len(items):
            return 0
        return int(self._seen_per_item[items].max())

    def _groups(self, items: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(positions in ``items``, user mask) per distinct regional availability: items
        sold in the same regions go to the same users."""
        bundle = self.bundle
        everywhere = np.asarray(bundle.available_everywhere, dtype=bool)
        availability = bundle.item_availability
        keys: dict[tuple[int, ...] | None, list[int]] = {}
        for pos, j in enumerate(items.tolist()):
            sold = None
            if not everywhere[j]:
                row = availability.indices[availability.indptr[j] : availability.indptr[j + 1]]
                sold = tuple(sorted(int(r) for r in row))
            keys.setdefault(sold, []).append(pos)
        for sold, positions in keys.items():
            first = int(items[positions[0]])
            yield np.asarray(positions, dtype=np.int64), self._users_for(sold, first)

    def _users_for(self, sold: tuple[int, ...] | None, item: int) -> np.ndarray:
        """The eligible users whose region may be shown ``item`` (one of the items sold in
        ``sold``): the pipeline's region rule over every user's bundle region."""
        found = self._masks.get(sold)
        if found is None:
            found = self.eligible & region_allows(self.model, self.model.user_regions, item)
            if len(self._masks) > 256:
                self._masks.clear()
            self._masks[sold] = found
        return found

    def _faiss(
        self, items: np.ndarray, fetch: int, selector: _Selector | None
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(self.bundle.item_factors[items], dtype=np.float32)
        if selector is None:
            scores, users = self.index.search(queries, fetch)
        else:
            scores, users = self.index.search(queries, fetch, params=selector.params)
        return users.astype(np.int64, copy=False), scores

    def _allowed(self, items: np.ndarray, users: np.ndarray) -> np.ndarray:
        """The serving filters for each (candidate user, item) pair."""
        found = users >= 0
        unique, inverse = np.unique(np.where(found, users, 0), return_inverse=True)
        inverse = inverse.reshape(users.shape)
        ids = self.bundle.user_ids
        pairs = self.suppression.pairs
        inputs = [
            UserInput(
                user_id=str(ids[u]),
                recent_events=self._recent_events(str(ids[u])),
                exclude_item_ids=tuple(pairs.get(str(ids[u]), ())),
                include_seen=self.options.include_seen,
                seen_events=self.options.seen_events,
            )
            for u in unique.tolist()
        ]
        batch = prepare_users(self.model, inputs, cold_vectors=False)
        # allowed_mask asks "may items[i, c] go to user users[i]": one row per pair here.
        flat_users = inverse.reshape(-1)
        flat_items = np.repeat(items, users.shape[1])[:, None]
        ok = allowed_mask(self.model, batch, flat_users, flat_items)[:, 0]
        return ok.reshape(users.shape) & found

    # -- output --------------------------------------------------------------------------

    def _table(
        self, items: np.ndarray, users: np.ndarray, scores: np.ndarray, counts: np.ndarray
    ) -> pa.Table:
        top = users.shape[1]
        keep = np.arange(top)[None, :] < counts[:, None]
        owner = np.repeat(np.arange(len(items)), counts)
        item_col = pa.array([self.model.item_id_list[j] for j in items.tolist()], pa.string())
        rank = np.broadcast_to(np.arange(1, top + 1, dtype=np.int32), users.shape)[keep]
        user_ids = np.asarray(self.bundle.user_ids)[users[keep]]
        return pa.table(
            {
                "item_id": item_col.take(pa.array(owner)),
                "rank": pa.array(rank, pa.int32()),
                "user_id": pa.array(user_ids.tolist(), pa.string()),
                "score": pa.array(scores[keep], pa.float32()),
            }
        )

    def _manifest(self, rows: int, short: int) -> dict[str, Any]:
        total = self.timings.get("search_and_write_s", 0.0)
        return {
            "kind": "recsvc-audience",
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "model_version": self.bundle.version,
            "bundle_path": str(self.bundle.path),
            "arguments": {
                k: manifest_value(k, v) for k, v in asdict(self.options).items() if k != "progress"
            },
            "user_index": self.index_source,
            "seen_items": "included" if self.options.include_seen else "excluded",
            "counts": {
                "rows": rows,
                "items": len(self.item_rows),
                "unknown_items_skipped": len(self.unknown_items),
                "eligible_users": self.n_eligible,
                "users_suppressed": len(self.suppression.users),
                "items_with_fewer_than_top": short,
                # Items with an all-zero vector (no interactions at training time): every
                # user scores 0, so their lists are arbitrary ties.
                "items_without_signal": int(
                    np.count_nonzero(~self.bundle.item_factors[self.item_rows].any(axis=1))
                ),
            },
            "timings_s": {
                **self.timings,
                "items_per_s": round(len(self.item_rows) / total, 1) if total else None,
            },
        }


class _Selector:
    """FAISS search parameters restricted to the users of a boolean mask."""

    def __init__(self, mask: np.ndarray) -> None:
        import faiss

        # FAISS keeps a raw pointer: the bitmap must live as long as the selector.
        self.bitmap = np.packbits(mask, bitorder="little")
        self.selector = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(self.bitmap))
        self.params = faiss.SearchParameters()
        self.params.sel = self.selector


def _blocks(rows: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def prepare_audience(opts: AudienceOptions) -> AudienceJob:
    """Validate everything and load what the job needs; raises before any output."""
    started = time.perf_counter()
    if not 1 <= opts.top <= MAX_TOP:
        raise UsageError(f"--top must be between 1 and {MAX_TOP}, got {opts.top}")
    if (opts.items is None) == (opts.item_filter is None):
        raise UsageError("give exactly one of --items FILE and --item-filter EXPR")
    check_writable(opts.out)
    listed = read_id_list(opts.items, "item_id", "items") if opts.items else None
    suppression = read_suppression(opts.suppress) if opts.suppress else Suppression()
    bundle = load_artifacts(opts.artifacts)
    n_users = len(bundle.user_ids)

    segment = None
    if opts.segment is not None:
        segment = parse_segment(opts.segment, known_fields=set(bundle.user_features))
    unknown: list[str] = []
    if listed is not None:
        found = [bundle.item_index.get(i) for i in listed.ids.tolist()]
        unknown = [i for i, j in zip(listed.ids.tolist(), found, strict=True) if j is None]
        item_rows = np.array([j for j in found if j is not None], dtype=np.int64)
        if not len(item_rows):
            raise UsageError(
                f"items file {opts.items}: none of its {len(unknown)} item ids is in model "
                f"{bundle.version} (first: {unknown[0]})"
            )
    else:
        assert opts.item_filter is not None
        item_filter = parse_segment(opts.item_filter, known_fields=set(bundle.item_features))
        mask = item_filter.mask(bundle.item_features, size=len(bundle.item_ids))
        item_rows = np.flatnonzero(mask).astype(np.int64)
        if not len(item_rows):
            raise UsageError(
                f"--item-filter {opts.item_filter!r} matches none of the "
                f"{len(bundle.item_ids)} items of model {bundle.version}"
            )

    eligible = np.ones(n_users, dtype=bool)
    if segment is not None:
        eligible &= segment.mask(bundle.user_features, size=n_users)
    if suppression.users:
        rows = [bundle.user_index.get(u) for u in suppression.users]
        eligible[[r for r in rows if r is not None]] = False

    if not eligible.any() and not opts.allow_empty:
        why = f"--segment {opts.segment!r} matches" if opts.segment else "there are"
        raise UsageError(
            f"{why} none of the {n_users} users of model {bundle.version}"
            + (" left after --suppress" if suppression.users else "")
            + "; nothing written (--allow-empty writes the empty file)"
        )
    timings = {"load_s": round(time.perf_counter() - started, 3)}
    model = build_model(bundle)
    index, source = load_or_build_user_index(bundle)
    # The index holds its own copy of the user vectors; the mapped ones (hashed for the
    # cache check, copied into a built index) need not stay resident too.
    release_mapped_pages(bundle)
    timings["prepare_s"] = round(time.perf_counter() - started, 3)
    if unknown:
        with contextlib.suppress(Exception):
            print(
                f"audience: {len(unknown)} item ids not in the model skipped (first: {unknown[0]})",
                file=sys.stderr,
            )
    store = None
    if opts.feature_store:
        from feature_store.factory import open_store

        store = open_store(opts.feature_store)
        store.ping()
    return AudienceJob(
        opts, bundle, model, item_rows, unknown, eligible, suppression, index, source, timings,
        store,
    )  # fmt: skip
