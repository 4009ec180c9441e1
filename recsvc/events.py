"""How much one event of each type counts as interest in an item.

The one definition for training and online code: ``recsvc train`` folds interactions with
these weights (extended or overridden by its ``event_weights`` setting) and records the
weights it used in the bundle manifest (``params.event_weights``); the online fold-in of
recent events reads the manifest's weights and falls back to these for a bundle that
records none. An impression is not interest (weight 0): it neither moves a user's vector
nor hides the item.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

DEFAULT_EVENT_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {
        "view": 1.0,
        "impression": 0.0,
        "click": 2.0,
        "add_to_cart": 4.0,
        "purchase": 8.0,
        "rating": 1.0,
    }
)


# -- the seen rule: which of a user's events hide the item from their lists ----------------
# Training interactions without an event type, purchases and ratings always mean the item
# was consumed. Views, clicks and add-to-carts are interest that may or may not: a shop of
# repeat purchases wants them shown again, a catalogue of films or articles does not.
# Impressions never hide anything (being shown an item is not interest).
ALWAYS_SEEN: frozenset[str] = frozenset({"interaction", "purchase", "rating"})
OPTIONAL_SEEN: tuple[str, ...] = ("view", "click", "add_to_cart")
# Default: they count. The bundle's training history hides every item a user interacted
# with (it keeps one folded matrix, not per-type cells), so an online click hiding its item
# now agrees with what the next retrain will do with the same click.
DEFAULT_SEEN_EVENTS: frozenset[str] = ALWAYS_SEEN | frozenset(OPTIONAL_SEEN)


def seen_events(optional: Iterable[str]) -> frozenset[str]:
    """The event types that hide an item: :data:`ALWAYS_SEEN` plus ``optional`` (each one
    of :data:`OPTIONAL_SEEN`; anything else raises ValueError naming the known ones)."""
    chosen = {str(name).strip() for name in optional if str(name).strip()}
    unknown = sorted(chosen - set(OPTIONAL_SEEN) - ALWAYS_SEEN)
    if unknown:
        raise ValueError(
            f"unknown event type {unknown[0]!r} for the seen rule; choose among "
            f"{', '.join(OPTIONAL_SEEN)} ({', '.join(sorted(ALWAYS_SEEN))} always count)"
        )
    return ALWAYS_SEEN | frozenset(chosen)


def parse_seen_events(text: str) -> frozenset[str]:
    """``"view,click"`` -> :func:`seen_events`; ``""`` or ``"none"`` -> only the always-seen
    types; ``"all"`` -> :data:`DEFAULT_SEEN_EVENTS`."""
    value = text.strip().lower()
    if value == "all":
        return DEFAULT_SEEN_EVENTS
    if value in ("", "none"):
        return ALWAYS_SEEN
    return seen_events(value.split(","))


def hides_item(event_type: str, seen: frozenset[str]) -> bool:
    """Whether one event of ``event_type`` hides its item from the user (the one rule for
    serving, export and audience)."""
    return event_type in seen
