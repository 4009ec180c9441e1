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

Credit: the exposure record is the one source of truth. An attributed event moves the
statistics of the policy recorded with its request (``policy``, whose state key must equal
the recorded ``policy_key``), for exactly the context values recorded
(:meth:`ArtworkPolicy.context_from_exposure`): the served region and attributes, the taste
values, whatever the experiment arm was. Nothing is recomputed from the profile or the
experiments at event time, so a request served in another region than the profile's, or
an experiment stopped between serve and click, still credits what was served. An event
whose exposure names a policy this server cannot build with the same state key (other
parameters, a bundle whose feature space is gone) is accepted for the history but moves no
statistics (``recsvc_events_total{outcome="uncredited"}``).

Retention and replicas: a request can be checked while the store keeps its served index
(``event_id_ttl_s``, 7 days by default, the same window as event-id idempotency). Exposures
are written in batches per replica (``exposure_flush_s``); an event for a request served by
ANOTHER replica is accepted only once that replica has flushed, so before then it is
rejected as unknown and the client should retry it (or route events to the replica that
served the request).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from feature_store.base import CounterDelta, StoredEvent
from recsvc.bandit.base import ArtworkContext, ArtworkPolicy
from recsvc.pipeline import ServingModel
from recsvc.serving.hotswap import ModelHolder
from recsvc.serving.limits import MAX_EVENTS, InvalidArgument, check_id
from recsvc.serving.metrics import ServingMetrics
from recsvc.serving.routing import Routing
from recsvc.serving.store_guard import ExposureLog, StoreGuard
from recsvc.v1 import recommender_pb2 as pb

EVENT_TYPES = {
    pb.EVENT_TYPE_IMPRESSION: "impression",
    pb.EVENT_TYPE_CLICK: "click",
    pb.EVENT_TYPE_ADD_TO_CART: "add_to_cart",
    pb.EVENT_TYPE_PURCHASE: "purchase",
}
CHECKED_TYPES = frozenset({"impression", "click"})  # the events that move bandit statistics
log = logging.getLogger("recsvc.serving")
Credit = tuple[ArtworkPolicy, ArtworkContext] | None


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
        accepted, rejected, unattributed, uncredited = await asyncio.to_thread(
            self.record_credited, model, events
        )
        outcomes = self.metrics.events
        outcomes.labels("accepted").inc(accepted)
        if rejected:
            outcomes.labels("rejected").inc(len(rejected))
        if unattributed:
            outcomes.labels("unattributed").inc(unattributed)
        if uncredited:
            outcomes.labels("uncredited").inc(uncredited)
        return pb.RecordEventsResponse(
            accepted=accepted,
            rejected=[pb.RejectedEvent(event_id=e, reason=r) for e, r in rejected],
        )

    def record(
        self, model: ServingModel, events: list[StoredEvent]
    ) -> tuple[int, list[tuple[str, str]], int]:
        """:meth:`record_credited` without the uncredited count."""
        accepted, rejected, unattributed, _ = self.record_credited(model, events)
        return accepted, rejected, unattributed

    def record_credited(
        self, model: ServingModel, events: list[StoredEvent]
    ) -> tuple[int, list[tuple[str, str]], int, int]:
        """Check, compute bandit deltas, write; runs in a worker thread. Returns (accepted,
        [(event_id, reason)], unattributed accepted, attributed but uncredited accepted)."""
        rejected: list[tuple[str, str]] = []
        keep: list[StoredEvent] = []
        requests = [e.request_id for e in events if _attributed(e)]
        rows = self.guard.call(lambda s: s.served_exposures(requests)) if requests else {}
        served = {r: _shown(row) for r, row in rows.items()}
        for event in events:
            problem = variant_problem(model, event) or served_problem(event, served)
            if problem:
                rejected.append((event.event_id, problem))
            else:
                keep.append(event)
        deltas, credited = self.bandit_deltas(model, keep, rows)
        flags = self.guard.call(lambda s: s.record_events(keep, deltas)) if keep else []
        unattributed = uncredited = 0
        for event, new, ok in zip(keep, flags, credited, strict=True):
            if not new:
                rejected.append((event.event_id, "duplicate event_id (already recorded)"))
            elif event.variant_id and not event.request_id and event.type in CHECKED_TYPES:
                unattributed += 1
            elif _attributed(event) and not ok:
                uncredited += 1
        return sum(flags), rejected, unattributed, uncredited

    def bandit_deltas(
        self,
        model: ServingModel,
        events: list[StoredEvent],
        exposures: Mapping[str, Mapping[str, Any]],
    ) -> tuple[list[list[CounterDelta]], list[bool]]:
        """Per event, the counter deltas of the policy and context its request's exposure
        recorded (attributed impressions/clicks only), and whether it was credited."""
        out: list[list[CounterDelta]] = []
        credited: list[bool] = []
        credits: dict[str, Credit] = {}
        for event in events:
            if not _attributed(event):
                out.append([])
                credited.append(False)
                continue
            rid = event.request_id
            if rid not in credits:
                credits[rid] = exposure_credit(model, exposures.get(rid))
            credit = credits[rid]
            if credit is None:
                out.append([])
                credited.append(False)
                continue
            policy, ctx = credit
            out.append(policy.updates_for(ctx, event))
            credited.append(True)
        return out, credited


def exposure_credit(model: ServingModel, row: Mapping[str, Any] | None) -> Credit:
    """(policy, context) that an exposure row's events are credited to, or None: no row,
    no policy recorded, or this server's policy of that name keys its statistics
    differently (``policy_key``)."""
    if not row or not row.get("policy"):
        return None
    name = str(row["policy"])
    try:
        policy = model.policy(name)
    except Exception as exc:  # a policy this server cannot build: no credit, not an error
        log.warning("exposure policy %r unavailable: %s", name, exc)
        return None
    if policy.state_key != str(row.get("policy_key") or ""):
        return None
    context = {str(k): str(v) for k, v in dict(row.get("context") or {}).items()}
    return policy, policy.context_from_exposure(str(row.get("user_id", "")), context)


def _shown(row: Mapping[str, Any]) -> dict[str, str]:
    """``{item_id: variant_id}`` of an exposure row (what ``served_variants`` answers)."""
    return dict(zip(row.get("item_ids") or (), row.get("variant_ids") or (), strict=False))


def _attributed(event: StoredEvent) -> bool:
    return bool(event.variant_id and event.request_id and event.type in CHECKED_TYPES)


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
