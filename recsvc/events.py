"""How much one event of each type counts as interest in an item.

The one definition for training and online code: ``recsvc train`` folds interactions with
these weights (extended or overridden by its ``event_weights`` setting) and records the
weights it used in the bundle manifest (``params.event_weights``); the online fold-in of
recent events reads the manifest's weights and falls back to these for a bundle that
records none. An impression is not interest (weight 0): it neither moves a user's vector
nor hides the item.
"""

from __future__ import annotations

from collections.abc import Mapping
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
