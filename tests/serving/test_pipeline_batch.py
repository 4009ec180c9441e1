"""The pipeline operators give the same answer for a user alone (serving) and in a batch
(export), whatever mix of users the batch holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from feature_store.base import StoredEvent
from recsvc.pipeline import UserInput, recommend
from recsvc.serving.hotswap import load_model


@pytest.fixture(scope="module")
def model(bundle_root: Path):
    return load_model(bundle_root, "default")


def _users() -> list[UserInput]:
    clicks = [StoredEvent(f"e{j}", "u010", f"i{j:03d}", "click", 1) for j in (62, 66, 70)]
    return [
        UserInput("u000"),
        UserInput("u001", region="north"),  # context region overrides the profile's
        UserInput("stranger", region="south"),
        UserInput("stranger"),
        UserInput("stranger", region="atlantis"),
        UserInput("u010", recent_events=clicks),  # folded in: searches the index
        UserInput("new-with-events", recent_events=clicks),
        UserInput("u003", exclude_item_ids=["i003", "i007"], categories=["toys", "games"]),
        UserInput("u004", include_seen=True),
        UserInput("u005", categories=["no-such-category"]),
    ]


@pytest.mark.parametrize("k", [1, 7, 60])
def test_batch_equals_one_by_one(model, k: int) -> None:
    users = _users()
    together = recommend(model, users, k)
    alone = [recommend(model, [u], k)[0] for u in users]
    for a, b in zip(together, alone, strict=True):
        assert a.item_ids == b.item_ids, a.user_id
        assert a.reasons == b.reasons and a.source == b.source
        assert a.scores == pytest.approx(b.scores, rel=1e-5, abs=1e-6)
    assert together[-1].item_ids == []  # an unknown category leaves nothing, not an error
