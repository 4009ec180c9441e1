"""RecordEvents: parse, check each event against what was served, update state atomically.

Checks, in order, for every event that names a ``variant_id``:

1. the variant belongs to the item in the current bundle (any event type);
2. for impressions and clicks with a ``request_id``: the request was served (its exposure is
   in the store, :meth:`OnlineStore.served_variants`) and showed that item with that variant.
   Unknown request, item not in the request, or a different variant -> rejected with a
   reason. Pending exposures of this replica are flushed first, so a click sent right after
   SelectArtwork is accepted.

Impressions/clicks that name a variant but no ``request_id`` cannot be attributed: they are
accepted for the user's history but move no bandit statistics, and are counted under
``recsvc_events_total{outcome="unattributed"}``. Events without ``variant_id`` go to the
history only.

The statistics an attributed event moves are those of the policy that served its user,
chosen by :class:`~recsvc.serving.routing.Routing` as Recommend and SelectArtwork choose it.

Retention and replicas: a request can be checked while the store keeps its served index
(``event_id_ttl_s``, 7 days by default, the same window as event-id idempotency). Exposures
are written in batches per replica (``exposure_flush_s``); an event for a request served by
ANOTHER replica is accepted only once that replica has flushed, so before then it is
rejected as unknown and the client should retry it (or route events to the replica that
served the request).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Mapping, Sequence
from typing import Any

from feature_store.base import CounterDelta, OnlineStore, StoredEvent, UserState
from recsvc.pipeline import ServingModel, UserInput, artwork_context, prepare_users
from recsvc.serving.hotswap import ModelHolder
from recsvc.serving.limits import MAX_EVENTS, InvalidArgument, check_id
from recsvc.serving.metrics import ServingMetrics
from recsvc.serving.routing import Routing, overrides_of
from recsvc.serving.store_guard import ExposureLog, StoreGuard
from recsvc.v1 import recommender_pb2 as pb

EVENT_TYPES = {
    pb.EVENT_TYPE_IMPRESSION: "impression",
    pb.EVENT_TYPE_CLICK: "click",
    pb.EVENT_TYPE_ADD_TO_CART: "add_to_cart",
    pb.EVENT_TYPE_PURCHASE: "purchase",
}
CHECKED_TYPES = frozenset({"impression", "click"})  # the events that move bandit statistics


class EventRecorder:
    """The RecordEvents RPC's work, over the server's parts (no servicer needed)."""

    def __init__(
        self,
        holder: ModelHolder,
        guard: StoreGuard,
        exposures: ExposureLog,
        metrics: ServingMetrics,
        routing: Routing,
    ) -> None:
        self.holder = holder
        self.guard = guard
        self.exposures = exposures
        self.metrics = metrics
        self.routing = routing

    async def record_events(self, request: pb.RecordEventsRequest) -> pb.RecordEventsResponse:
        events = parse_events(request.events)
        model = self.holder.model
        if any(_attributed(e) for e in events):
            # Also when the queue is empty: the periodic flush may have taken the batch and
            # still be writing it (flush waits for that write first).
            await self.exposures.flush()
        accepted, rejected, unattributed = await asyncio.to_thread(self.record, model, events)
        outcomes = self.metrics.events
        outcomes.labels("accepted").inc(accepted)
        if rejected:
            outcomes.labels("rejected").inc(len(rejected))
        if unattributed:
            outcomes.labels("unattributed").inc(unattributed)
        return pb.RecordEventsResponse(
            accepted=accepted,
            rejected=[pb.RejectedEvent(event_id=e, reason=r) for e, r in rejected],
        )

    def record(
        self, model: ServingModel, events: list[StoredEvent]
    ) -> tuple[int, list[tuple[str, str]], int]:
        """Check, compute bandit deltas, write; runs in a worker thread.
        Returns (accepted, [(event_id, reason)], unattributed accepted)."""
        rejected: list[tuple[str, str]] = []
        keep: list[StoredEvent] = []
        requests = [e.request_id for e in events if _attributed(e)]
        served = self.guard.call(lambda s: s.served_variants(requests)) if requests else {}
        for event in events:
            problem = variant_problem(model, event) or served_problem(event, served)
            if problem:
                rejected.append((event.event_id, problem))
            else:
                keep.append(event)
        deltas = self.bandit_deltas(model, keep)
        flags = self.guard.call(lambda s: s.record_events(keep, deltas)) if keep else []
        unattributed = 0
        for event, new in zip(keep, flags, strict=True):
            if not new:
                rejected.append((event.event_id, "duplicate event_id (already recorded)"))
            elif event.variant_id and not event.request_id and event.type in CHECKED_TYPES:
                unattributed += 1
        return sum(flags), rejected, unattributed

    def bandit_deltas(
        self, model: ServingModel, events: list[StoredEvent]
    ) -> list[list[CounterDelta]]:
        """Per event, the counter deltas of the policy that served its user (attributed
        impressions/clicks only; other events move no bandit statistics)."""
        shown = [e for e in events if _attributed(e)]
        if not shown:
            return [[] for _ in events]
        users = list(dict.fromkeys(e.user_id for e in shown))
        profiles: dict[str, Mapping[str, str]] = {}
        for user_id in users:
            state, _ = self.guard.call(functools.partial(_read_user, user_id=user_id))
            profiles[user_id] = state.profile
        batch = prepare_users(
            model, [UserInput(user_id=u, profile=profiles[u]) for u in users], cold_vectors=False
        )
        contexts = {u: artwork_context(batch, i) for i, u in enumerate(users)}
        out: list[list[CounterDelta]] = []
        for event in events:
            if not _attributed(event):
                out.append([])
                continue
            ctx = contexts[event.user_id]
            assignment = self.routing.assign(event.user_id, dict(ctx.features))
            policy, _ = self.routing.policies(model, overrides_of(assignment))
            out.append(policy.updates_for(ctx, event))
        return out


def _attributed(event: StoredEvent) -> bool:
    return bool(event.variant_id and event.request_id and event.type in CHECKED_TYPES)


def _read_user(store: OnlineStore, user_id: str) -> tuple[UserState, Any]:
    return store.read_user(user_id)


def served_problem(event: StoredEvent, served: Mapping[str, Mapping[str, str]]) -> str:
    """Why an impression/click does not match what its request showed ("" = it does)."""
    if not _attributed(event):
        return ""
    shown = served.get(event.request_id)
    if shown is None:
        return (
            f"request_id {event.request_id!r} is unknown: not served by this service, not yet "
            f"logged by the replica that served it, or older than the retention window"
        )
    if event.item_id not in shown:
        return f"item {event.item_id!r} was not shown in request {event.request_id!r}"
    if shown[event.item_id] != event.variant_id:
        return (
            f"variant_id {event.variant_id!r} is not the variant request {event.request_id!r} "
            f"showed for item {event.item_id!r} ({shown[event.item_id]!r})"
        )
    return ""


def variant_problem(model: ServingModel, event: StoredEvent) -> str:
    if not event.variant_id:
        return ""
    row = model.bundle.item_index.get(event.item_id)
    if row is None:
        return f"item_id {event.item_id!r} is not in the model, so variant_id cannot be checked"
    if event.variant_id not in set(model.variants_of(row).tolist()):
        return f"variant_id {event.variant_id!r} is not a variant of item {event.item_id!r}"
    return ""


def parse_events(raw: Sequence[pb.Event]) -> list[StoredEvent]:
    if len(raw) > MAX_EVENTS:
        raise InvalidArgument("events", f"at most {MAX_EVENTS} entries, got {len(raw)}")
    now_ms = int(time.time() * 1000)
    out = []
    for i, e in enumerate(raw):
        where = f"events[{i}]"
        check_id(e.event_id, f"{where}.event_id")
        check_id(e.user_id, f"{where}.user_id")
        check_id(e.item_id, f"{where}.item_id")
        check_id(e.request_id, f"{where}.request_id", required=False)
        check_id(e.variant_id, f"{where}.variant_id", required=False)
        kind = EVENT_TYPES.get(e.type)
        if kind is None:
            raise InvalidArgument(
                f"{where}.type", "must be IMPRESSION, CLICK, ADD_TO_CART or PURCHASE"
            )
        if e.timestamp_ms < 0:
            raise InvalidArgument(f"{where}.timestamp_ms", "must not be negative")
        out.append(
            StoredEvent(
                event_id=e.event_id,
                user_id=e.user_id,
                item_id=e.item_id,
                type=kind,
                timestamp_ms=e.timestamp_ms or now_ms,
                request_id=e.request_id,
                variant_id=e.variant_id,
            )
        )
    return out
