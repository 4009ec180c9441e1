"""A user's features, merged the one way every online path reads them.

Serving (experiment assignment and the pipeline), export (users-file columns, segment
checks) and audience all call :func:`merge_user_features`, so a user is in the same
segment, region and cold-start bucket whichever path asks.
"""

from __future__ import annotations

from collections.abc import Mapping

_EMPTY: Mapping[str, str] = {}


def merge_user_features(
    profile: Mapping[str, str],
    region: str = "",
    attributes: Mapping[str, str] = _EMPTY,
    *,
    base: Mapping[str, str] = _EMPTY,
) -> dict[str, str]:
    """The features of one user; later sources win over earlier ones:
    ``base`` (the bundle's training-time features of a known user) < the stored
    ``profile`` < the request's ``attributes`` < the request's ``region`` (when given)."""
    merged = dict(base)
    merged.update(profile)
    merged.update(attributes)
    if region:
        merged["region"] = region
    return merged
