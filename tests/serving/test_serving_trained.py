"""Serving a bundle that ``recsvc train`` really produced (tiny demo storefront)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from recsvc.bundle import load_bundle
from recsvc.v1 import recommender_pb2 as pb

pytestmark = pytest.mark.slow


def test_trained_bundle_known_cold_and_fold_in(trained_bundle_root: Path, start_server,
                                               stub_for) -> None:  # fmt: skip
    bundle = load_bundle(trained_bundle_root)
    server = start_server(trained_bundle_root)
    stub = stub_for(server)
    index = bundle.item_index
    category = bundle.item_features["category"]

    user = str(bundle.user_ids[3])
    seen = {str(bundle.item_ids[j]) for j in bundle.user_items[3].indices}
    before = stub.Recommend(pb.RecommendRequest(user_id=user, k=10), timeout=10)
    ids = [i.item_id for i in before.items]
    assert len(ids) == 10 and not set(ids) & seen
    assert before.model_version == bundle.version

    # Cold start by region respects availability.
    regions = [str(r) for r in bundle.region_names]
    for r, region in enumerate(regions[:3]):
        cold = stub.Recommend(
            pb.RecommendRequest(user_id="new-visitor", k=10, context=pb.Context(region=region)),
            timeout=10,
        )
        rows = np.array([index[i.item_id] for i in cold.items])
        avail = bundle.available_everywhere[rows] | (
            bundle.item_availability[rows][:, r].toarray().ravel() > 0
        )
        assert len(rows) == 10 and avail.all()

    # Clicking items of a category moves that category up the user's whole ranking.
    def ranking() -> list[str]:
        resp = stub.Recommend(pb.RecommendRequest(user_id=user, k=500), timeout=10)
        return [i.item_id for i in resp.items]

    def mean_position(ids: list[str], target: str, skip: set[str]) -> float:
        return float(
            np.mean([p for p, i in enumerate(ids) if cat_of(i) == target and i not in skip])
        )

    def cat_of(item: str) -> str:
        return str(category[index[item]])

    everything = ranking()  # every item this user may be shown, best first
    by_category = Counter(cat_of(i) for i in everything)
    top10 = Counter(cat_of(i) for i in everything[:10])
    target = min((c for c, n in by_category.items() if n >= 8), key=lambda c: (top10[c], c))
    clicks = [i for i in everything if cat_of(i) == target][:5]  # what the user would see first
    events = [
        pb.Event(event_id=f"t-{x}", user_id=user, item_id=x, type=pb.EVENT_TYPE_CLICK,
                 timestamp_ms=int(time.time() * 1000))
        for x in clicks
    ]  # fmt: skip
    assert stub.RecordEvents(pb.RecordEventsRequest(events=events), timeout=10).accepted == 5
    after = ranking()
    assert not set(after) & set(clicks)  # clicked = interacted: not recommended again
    skip = set(clicks)
    assert mean_position(after, target, skip) < mean_position(everything, target, skip)
