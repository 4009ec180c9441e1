"""The ``OnlineStore`` contract (Feast's online-store anchor, for our data).

One implementation per backend (``sqlite.py``, ``redis.py``); one contract test suite runs
against both. Every method either succeeds, raises :class:`FeatureStoreUnavailable` after a
bounded timeout (callers degrade), or raises ``ValueError`` for bad arguments.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

EVENT_TYPES = ("impression", "click", "add_to_cart", "purchase")
LogKind = Literal["exposure", "event"]


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One user event. ``type`` is one of :data:`EVENT_TYPES`."""

    event_id: str
    user_id: str
    item_id: str
    type: str
    timestamp_ms: int
    request_id: str = ""
    variant_id: str = ""


@dataclass(frozen=True, slots=True)
class CounterDelta:
    """Add ``amount`` to ``field`` of the counter hash ``key`` (atomic, shared by replicas)."""

    key: str
    field: str
    amount: float


@dataclass(frozen=True, slots=True)
class UserState:
    """What a Recommend call needs about a user: profile features and recent events."""

    profile: Mapping[str, str]
    recent_events: Sequence[StoredEvent]  # newest first, capped (settings.recent_events_cap)

    def recent_item_ids(self) -> list[str]:
        """``item_id`` of each recent event, newest first. The backends' lazy sequences
        answer without building ``StoredEvent`` objects."""
        fast = getattr(self.recent_events, "item_ids", None)
        return list(fast()) if fast is not None else [e.item_id for e in self.recent_events]

    def recent_types(self) -> list[str]:
        """``type`` of each recent event, aligned with :meth:`recent_item_ids`."""
        fast = getattr(self.recent_events, "types", None)
        return list(fast()) if fast is not None else [e.type for e in self.recent_events]


@dataclass(frozen=True, slots=True)
class ExposureRecord:
    """What was served: one row per request (items, artwork variants, propensities), and
    what the artwork policy's credit depends on: its name (``policy``) and state identity
    (``policy_key``), the context values it used (``context``), the experiment arm and the
    model version. Events of the request are credited from this record alone."""

    request_id: str
    user_id: str
    timestamp_ms: int
    item_ids: Sequence[str]
    variant_ids: Sequence[str]
    propensities: Sequence[float]
    model_version: str = ""
    experiment: str = ""
    variant: str = ""
    policy: str = ""
    context: Mapping[str, str] = field(default_factory=dict)
    policy_key: str = ""


class OnlineStore(ABC):
    """Per-request state of the online path. Thread-safe; cheap to call from asyncio code."""

    url: str

    # -- profiles and item attributes (materialized from contract files) -------------------
    @abstractmethod
    def write_user_profiles(self, profiles: Iterable[tuple[str, Mapping[str, str]]]) -> int:
        """Upsert user feature rows (region and other columns); returns rows written."""

    @abstractmethod
    def write_item_attributes(self, items: Iterable[tuple[str, Mapping[str, str]]]) -> int:
        """Upsert item attribute rows (``regions`` availability and other columns)."""

    @abstractmethod
    def get_item_attributes(self, item_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        """Attributes of the known items among ``item_ids``."""

    # -- the request read: one round trip ---------------------------------------------------
    @abstractmethod
    def read_user(
        self, user_id: str, counter_keys: Sequence[str] = ()
    ) -> tuple[UserState, dict[str, dict[str, float]]]:
        """Profile + recent events of ``user_id`` and the counter hashes ``counter_keys``,
        in one round trip. Unknown user: empty profile and no events (not an error)."""

    #: Whether :meth:`read_user_async` waits without blocking the event loop (else it is
    #: :meth:`read_user` called inline, and callers may as well call that).
    async_reads: bool = False

    async def read_user_async(
        self, user_id: str, counter_keys: Sequence[str] = ()
    ) -> tuple[UserState, dict[str, dict[str, float]]]:
        """:meth:`read_user` for asyncio callers: same answer and errors. Backends whose
        read is a network round trip override it so the loop serves other requests while
        the reply is on its way."""
        return self.read_user(user_id, counter_keys)

    # -- events ------------------------------------------------------------------------------
    @abstractmethod
    def record_events(
        self,
        events: Sequence[StoredEvent],
        deltas: Sequence[Sequence[CounterDelta]] | None = None,
    ) -> list[bool]:
        """Idempotent by ``event_id``: for each event, True if new (appended to the user's
        recent list and the event log, and its ``deltas[i]`` applied atomically), False if
        its event_id was seen before (nothing changes)."""

    # -- counters (bandit state) --------------------------------------------------------------
    @abstractmethod
    def incr_counters(self, deltas: Sequence[CounterDelta]) -> None:
        """Apply counter deltas atomically."""

    @abstractmethod
    def get_counters(self, keys: Sequence[str]) -> dict[str, dict[str, float]]:
        """Counter hashes by key; missing keys map to an empty dict."""

    # -- exposure / event log ------------------------------------------------------------------
    @abstractmethod
    def log_exposures(self, records: Sequence[ExposureRecord]) -> None:
        """Append to the bounded exposure log."""

    @abstractmethod
    def read_log(
        self, kind: LogKind, since_ms: int | None = None, limit: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Rows of the exposure or event log, oldest first."""

    @abstractmethod
    def export_log(self, kind: LogKind, path: Path) -> int:
        """Write the log to Parquet; returns the row count."""

    # -- small documents (experiment definitions, ...) shared by all replicas -------------------
    @abstractmethod
    def put_document(self, namespace: str, name: str, doc: Mapping[str, Any]) -> None: ...

    @abstractmethod
    def get_document(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    @abstractmethod
    def list_documents(self, namespace: str) -> dict[str, dict[str, Any]]: ...

    @abstractmethod
    def delete_document(self, namespace: str, name: str) -> bool: ...

    # -- lifecycle ------------------------------------------------------------------------------
    @abstractmethod
    def ping(self) -> float:
        """Round-trip latency in seconds; raises FeatureStoreUnavailable."""

    @abstractmethod
    def close(self) -> None: ...

    # -- what each request showed (appended: checks that an event names the variant shown) ----
    @abstractmethod
    def served_variants(self, request_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        """``{request_id: {item_id: variant_id}}`` for the requests among ``request_ids`` whose
        exposure was logged (:meth:`log_exposures` indexes each record) and is younger than
        the retention (``event_id_ttl_s``: as long as an event id is remembered for
        idempotency). Unknown or expired requests are absent; an item shown without
        artwork maps to ``""``."""

    def served_exposures(self, request_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The logged exposure rows (``codec.exposure_row`` fields) of the requests among
        ``request_ids``, under the same retention as :meth:`served_variants`. Backends
        that keep the rows override this; the fallback knows only the items shown."""
        return {
            r: {"request_id": r, "item_ids": list(shown), "variant_ids": list(shown.values())}
            for r, shown in self.served_variants(request_ids).items()
        }
