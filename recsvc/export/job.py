"""``recsvc export``: top-N per user for a segment, streamed to CSV/Parquet.

:func:`prepare_export` does every check that can fail (output path, bundle, segment, input
files, feature store, policy) before any work; :meth:`ExportJob.run` then streams users in
chunks through the serving pipeline (:mod:`recsvc.export.batch`), appends rows to a temp
file, and publishes it with its manifest only when everything succeeded.
"""

from __future__ import annotations

import contextlib
import platform
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pyarrow as pa

from feature_store.base import OnlineStore
from recsvc.bundle import Bundle, release_mapped_pages
from recsvc.errors import UsageError
from recsvc.export.batch import ArtworkPicker, ChunkRunner
from recsvc.export.output import AtomicTableWriter, check_writable
from recsvc.export.progress import Progress
from recsvc.export.sources import IdList, Suppression, read_id_list, read_suppression
from recsvc.pipeline.features import merge_user_features
from recsvc.pipeline.model import ServingModel, build_model
from recsvc.pipeline.users import UserInput
from recsvc.segments import Segment, parse_segment

EXPORT_SCHEMA = pa.schema(
    [
        ("user_id", pa.string()),
        ("rank", pa.int32()),
        ("item_id", pa.string()),
        ("score", pa.float32()),
        ("artwork_variant_id", pa.string()),
        ("model_version", pa.string()),
    ]
)
ARTWORK_RULE = "best posterior mean, no exploration"
MAX_K = 1000


@dataclass(frozen=True)
class ExportOptions:
    artifacts: Path
    out: Path
    k: int
    users: Path | None = None
    segment: str | None = None
    suppress: Path | None = None
    feature_store: str | None = None
    include_seen: bool = False
    # Recent event types that hide their item (recsvc.events' seen rule), as serving's
    # --seen-events; None = the default.
    seen_events: frozenset[str] | None = None
    # An export of nobody (a segment or users file matching no user) is refused unless set.
    allow_empty: bool = False
    chunk_size: int = 2048
    policy: str = "default"
    progress: bool = True
    # Per-user arrays as memory maps read a chunk at a time (bounded RSS); False loads
    # the whole bundle into RAM as serving does (same output, more memory).
    map_user_arrays: bool = True


@dataclass
class ExportSummary:
    rows: int = 0
    users_selected: int = 0
    users_exported: int = 0
    users_suppressed: int = 0
    users_outside_segment: int = 0
    users_short: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    duplicates_in_users_file: int = 0


@dataclass
class ExportJob:
    options: ExportOptions
    bundle: Bundle
    model: ServingModel
    segment: Segment | None
    users: IdList | None
    suppression: Suppression
    store: OnlineStore | None
    runner: ChunkRunner
    timings: dict[str, float]

    def run(self, log: TextIO | None = None) -> dict[str, Any]:
        """Write the export; returns its manifest. No final file unless it all worked."""
        log = log if log is not None else sys.stderr
        opts = self.options
        summary = ExportSummary()
        started = time.perf_counter()
        selection = self._selection(summary)
        progress = Progress(selection.total, "user", "export", stream=log, enabled=opts.progress)
        try:
            with AtomicTableWriter(opts.out, EXPORT_SCHEMA) as writer:
                for inputs in selection.chunks():
                    result = self.runner.run(inputs)
                    writer.write(result.table)
                    summary.users_exported += len(inputs)
                    summary.kinds.update(result.kinds)
                    summary.users_short += result.short_users
                    progress.update(len(inputs))
                summary.rows = writer.rows
                summary.users_outside_segment += selection.outside_segment
                if not summary.users_exported and not opts.allow_empty:
                    raise UsageError(f"{_nobody(opts, summary)}; nothing written "
                                     "(--allow-empty writes the empty file)")  # fmt: skip
                self.timings["recommend_and_write_s"] = round(time.perf_counter() - started, 3)
                return writer.commit(self._manifest(summary))
        finally:
            progress.close()
            self.runner.close()
            if self.store is not None:
                with contextlib.suppress(Exception):
                    self.store.close()

    # -- users ---------------------------------------------------------------------------

    def _selection(self, summary: ExportSummary) -> _Selection:
        suppressed = self.suppression.users
        if self.users is not None:
            ids = self.users.ids
            summary.duplicates_in_users_file = self.users.duplicates
            keep = np.array([u not in suppressed for u in ids.tolist()], dtype=bool)
            summary.users_selected = int(ids.size)
            summary.users_suppressed = int(np.count_nonzero(~keep))
            features = {c: v[keep] for c, v in self.users.features.items()}
            return _Selection(self, ids[keep], features, filter_each=self.segment)
        rows = np.arange(len(self.bundle.user_ids))
        if self.segment is not None:
            mask = self.segment.mask(self.bundle.user_features, size=len(rows))
            summary.users_outside_segment = int(np.count_nonzero(~mask))
            rows = rows[mask]
        # Fixed-width ids, turned into str objects a chunk at a time (1M users as str
        # objects would be ~60 MB more).
        ids = self.bundle.user_ids[rows]
        summary.users_selected = int(ids.size)
        if suppressed:
            keep = np.array([u not in suppressed for u in ids.tolist()], dtype=bool)
            summary.users_suppressed = int(np.count_nonzero(~keep))
            ids = ids[keep]
        return _Selection(self, ids, {}, filter_each=None)

    def user_inputs(self, ids: list[str], features: Mapping[str, np.ndarray]) -> list[UserInput]:
        """Inputs as a Recommend call with no request context would build them."""
        opts = self.options
        pairs = self.suppression.pairs
        inputs = []
        for i, user_id in enumerate(ids):
            stored: Mapping[str, str] = {}
            events: tuple[Any, ...] = ()
            if self.store is not None:
                state, _ = self.store.read_user(user_id)
                stored = state.profile
                events = tuple(state.recent_events)
            # The users file is the caller's explicit word, as a request's attributes are:
            # its non-empty cells win over the stored profile.
            given = {c: str(v[i]) for c, v in features.items() if str(v[i])}
            inputs.append(
                UserInput(
                    user_id=user_id,
                    profile=merge_user_features(stored, attributes=given),
                    recent_events=events,
                    exclude_item_ids=tuple(sorted(pairs.get(user_id, ()))),
                    include_seen=opts.include_seen,
                    seen_events=opts.seen_events,
                )
            )
        return inputs

    # -- manifest ------------------------------------------------------------------------

    def _manifest(self, summary: ExportSummary) -> dict[str, Any]:
        opts = self.options
        total = self.timings.get("recommend_and_write_s", 0.0)
        return {
            "kind": "recsvc-export",
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "model_version": self.bundle.version,
            "bundle_path": str(self.bundle.path),
            "arguments": {
                k: manifest_value(k, v) for k, v in asdict(opts).items() if k != "progress"
            },
            "artwork": {"policy": opts.policy, "rule": ARTWORK_RULE},
            "seen_items": "included" if opts.include_seen else "excluded",
            "counts": {
                "rows": summary.rows,
                "users_selected": summary.users_selected,
                "users_exported": summary.users_exported,
                "users_suppressed": summary.users_suppressed,
                "users_outside_segment": summary.users_outside_segment,
                "users_with_fewer_than_k": summary.users_short,
                "duplicate_ids_in_users_file": summary.duplicates_in_users_file,
                "suppressed_pairs": sum(len(v) for v in self.suppression.pairs.values()),
                "by_kind": dict(sorted(summary.kinds.items())),
            },
            "timings_s": {
                **self.timings,
                "users_per_s": round(summary.users_exported / total, 1) if total else None,
            },
            "host": {"python": platform.python_version(), "machine": platform.machine()},
        }


class _Selection:
    """The users to export, yielded as chunks of pipeline inputs."""

    def __init__(
        self,
        job: ExportJob,
        ids: np.ndarray,
        features: Mapping[str, np.ndarray],
        filter_each: Segment | None,
    ) -> None:
        self.job = job
        self.ids = ids
        self.features = features
        self.filter_each = filter_each
        self.total = int(ids.size)
        self.outside_segment = 0

    def chunks(self) -> Iterator[list[UserInput]]:
        size = self.job.options.chunk_size
        for start in range(0, self.total, size):
            stop = min(start + size, self.total)
            feats = {c: v[start:stop] for c, v in self.features.items()}
            inputs = self.job.user_inputs(self.ids[start:stop].tolist(), feats)
            if self.filter_each is not None:
                inputs = self._in_segment(inputs)
            yield inputs

    def _in_segment(self, inputs: list[UserInput]) -> list[UserInput]:
        # A users file with a segment: judge each user by the features serving would use
        # (bundle features < stored profile < users-file columns).
        bundle = self.job.bundle
        segment = self.filter_each
        assert segment is not None
        kept = []
        for user in inputs:
            row = bundle.user_index.get(user.user_id, -1)
            base = {c: str(v[row]) for c, v in bundle.user_features.items()} if row >= 0 else {}
            if segment.matches(merge_user_features(user.profile, base=base)):
                kept.append(user)
        self.outside_segment += len(inputs) - len(kept)
        return kept


def _nobody(opts: ExportOptions, summary: ExportSummary) -> str:
    """Why an export selected no user, for the refusal."""
    if opts.users is not None:
        what = f"--users {opts.users} ({summary.users_selected} ids"
        if summary.users_suppressed:
            what += f", {summary.users_suppressed} suppressed"
        what += ")"
    else:
        what = f"the model's {summary.users_selected + summary.users_outside_segment} users"
    if opts.segment is not None:
        return f"--segment {opts.segment!r} matches none of {what}"
    return f"no user left to export from {what}"


def manifest_value(name: str, value: Any) -> Any:
    """An option as the manifest records it: paths as text, sets sorted, and a store URL
    without its password (the manifest travels with the output)."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, frozenset | set):
        return sorted(value)
    if name == "feature_store" and isinstance(value, str):
        from feature_store.redis import public_url

        return public_url(value)
    return value


def prepare_export(opts: ExportOptions) -> ExportJob:
    """Validate everything and load what the export needs; raises before any output."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    if opts.k < 1 or opts.k > MAX_K:
        raise UsageError(f"--k must be between 1 and {MAX_K}, got {opts.k}")
    if opts.chunk_size < 1:
        raise UsageError(f"--chunk-size must be >= 1, got {opts.chunk_size}")
    check_writable(opts.out)
    users = read_id_list(opts.users, "user_id", "users") if opts.users else None
    suppression = read_suppression(opts.suppress) if opts.suppress else Suppression()
    bundle = load_artifacts(opts.artifacts, map_user_arrays=opts.map_user_arrays)
    segment = None
    if opts.segment is not None:
        fields = set(bundle.user_features)
        if users is not None:
            fields |= set(users.features)
        segment = parse_segment(opts.segment, known_fields=fields)
    timings["load_s"] = round(time.perf_counter() - started, 3)
    model = build_model(bundle)
    policy = model.policy(opts.policy)
    release_mapped_pages(bundle)  # what build_model's checks read of the per-user arrays
    store = None
    if opts.feature_store:
        from feature_store.factory import open_store

        store = open_store(opts.feature_store)
        store.ping()
    runner = ChunkRunner(model, opts.k, ArtworkPicker(model, policy, store))
    timings["prepare_s"] = round(time.perf_counter() - started, 3)
    return ExportJob(opts, bundle, model, segment, users, suppression, store, runner, timings)


def load_artifacts(path: Path, *, map_user_arrays: bool = True) -> Bundle:
    """The bundle at ``path`` (a root with ``current`` or a version directory), by
    default with its per-user arrays memory-mapped: a batch job reads them a chunk of
    users at a time and drops the pages after each
    (:func:`recsvc.bundle.release_mapped_pages`)."""
    from recsvc.bundle import load_bundle

    if not path.exists():
        raise UsageError(f"--artifacts {path} does not exist")
    return load_bundle(path, map_user_arrays=map_user_arrays)
