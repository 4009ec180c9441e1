"""How much one event of each type counts as interest in an item.

The one definition for training and online code: ``recsvc train`` folds interactions with
these weights (extended or overridden by its ``event_weights`` setting) and records the
weights it used in the bundle manifest (``params.event_weights``); the online fold-in of
recent events reads the manifest's weights and falls back to these for a bundle that
records none. An impression is not interest (weight 0): it neither moves a user's vector
nor hides the item.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from types import MappingProxyType

import numpy as np

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
# Impressions never hide anything (being shown an item is not interest), nor does a type
# outside these two sets (an ``event_weights`` extension such as ``wishlist``).
ALWAYS_SEEN: frozenset[str] = frozenset({"interaction", "purchase", "rating"})
OPTIONAL_SEEN: tuple[str, ...] = ("view", "click", "add_to_cart")
# Default: they count. The bundle keeps, per training cell, which kinds of event made it
# (SEEN_CLASSES), so every setting applies to the training history as to recent events;
# counting them is what every bundle did before it kept the kinds, what a bundle without
# them (the Spark trainer's) still does under any setting, and the usual wish of a
# catalogue. Upgrading therefore changes no list; `none` is the deliberate choice of a
# repeat-purchase shop.
DEFAULT_SEEN_EVENTS: frozenset[str] = ALWAYS_SEEN | frozenset(OPTIONAL_SEEN)

# The kinds of event a training cell remembers, bit i = SEEN_CLASSES[i]: bit 0 for any
# ALWAYS_SEEN type, then one bit per OPTIONAL_SEEN type (the bundle records this list with
# the array, so a reader maps bits by name, not by position).
ALWAYS_CLASS = "always"
SEEN_CLASSES: tuple[str, ...] = (ALWAYS_CLASS, *OPTIONAL_SEEN)


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


def seen_class_bit(event_type: str) -> int:
    """The bit (of :data:`SEEN_CLASSES`) an event of ``event_type`` sets on its training
    cell; 0 for a type that never hides its item."""
    if event_type in ALWAYS_SEEN:
        return 1
    if event_type in OPTIONAL_SEEN:
        return 1 << (1 + OPTIONAL_SEEN.index(event_type))
    return 0


@lru_cache(maxsize=256)
def hiding_bits(classes: tuple[str, ...], seen: frozenset[str]) -> np.uint8:
    """The bits of a cell mask over ``classes`` (the list a bundle recorded) that hide the
    item under ``seen``. A class this build does not know hides (what every cell did before
    bundles kept their kinds), so a newer bundle read by an older server hides no less."""
    bits = 0
    for i, name in enumerate(classes):
        if name == ALWAYS_CLASS or name in seen or name not in OPTIONAL_SEEN:
            bits |= 1 << i
    return np.uint8(bits)


def hidden_cells(seen_by: np.ndarray, classes: Sequence[str], seen: frozenset[str]) -> np.ndarray:
    """Which training cells hide their item under ``seen`` (the one mask serving, export
    and audience build): ``[n] bool`` over ``seen_by``, the cells' kind bits (a slice of
    the bundle's ``user_items_seen_by``, whose class names are ``classes``). A bundle
    without kinds has no such array: all of its cells hide."""
    return (seen_by & hiding_bits(tuple(classes), seen)) != 0  # type: ignore[no-any-return]
