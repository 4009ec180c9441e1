"""Policy state round-trips through a real feature store (SQLite file; Redis when present).

Two policy objects play two serving replicas sharing one store: what one records, the other
reads; duplicate event ids move nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from feature_store import OnlineStore, StoredEvent, open_store
from recsvc.bandit.base import ArtworkContext, ArtworkPolicy
from recsvc.bandit.linear import LinearThompsonPolicy, build_feature_map
from recsvc.bandit.thompson import ThompsonPolicy
from recsvc.bandit.variants import accumulate
from tests.bandit.worlds import catalog

ART, INDEX = catalog(
    {f"i{k}": [("x", "comedy"), ("y", "drama"), ("z", "action")] for k in range(6)}
)
FACTORS = np.random.default_rng(0).normal(size=(50, 4))
USERS = {f"u{k}": k for k in range(50)}


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OnlineStore]:
    if request.param == "sqlite":
        s = open_store(f"sqlite:///{tmp_path / 'fs.sqlite'}")
    else:
        url = request.getfixturevalue("redis_server_url")
        s = open_store(url, prefix=request.getfixturevalue("redis_prefix"))
    yield s
    s.close()


def _policies() -> list[tuple[ArtworkPolicy, ArtworkPolicy]]:
    fmap = build_feature_map(FACTORS, USERS, {}, taste_dims=3)
    return [
        (
            ThompsonPolicy(ART, INDEX, refresh_ms=0, seed=1),
            ThompsonPolicy(ART, INDEX, refresh_ms=0, seed=2),
        ),
        (
            LinearThompsonPolicy(ART, INDEX, fmap, refresh_ms=0, seed=1),
            LinearThompsonPolicy(ART, INDEX, fmap, refresh_ms=0, seed=2),
        ),
    ]


@pytest.mark.parametrize("which", [0, 1], ids=["ts", "lints"])
def test_counters_round_trip_and_are_shared_by_replicas(store: OnlineStore, which: int) -> None:
    replicas = _policies()[which]
    rng = np.random.default_rng(3)
    expected: dict[str, dict[str, float]] = {}
    n_event = 0
    for step in range(60):
        policy = replicas[step % 2]  # requests alternate between the two replicas
        user = f"u{rng.integers(50)}"
        ctx = ArtworkContext(user, region="EU", features={"segment": "a"})
        items = [f"i{k}" for k in rng.choice(6, 3, replace=False)]
        counters = store.get_counters(policy.counter_keys(ctx, items))
        decisions = policy.choose(ctx, items, counters)
        events, deltas = [], []
        for d in decisions:
            kinds = ["impression"] + (["click"] if rng.random() < 0.3 else [])
            for kind in kinds:
                n_event += 1
                event = StoredEvent(f"ev{n_event}", user, d.item_id, kind, step, "r", d.variant_id)
                events.append(event)
                deltas.append(policy.updates_for(ctx, event))
        assert store.record_events(events, deltas) == [True] * len(events)
        # The same events again (a client retry): nothing counts twice.
        assert store.record_events(events, deltas) == [False] * len(events)
        for ds in deltas:
            accumulate(ds, expected)
    keys = sorted(expected)
    stored = store.get_counters(keys)
    for key in keys:
        assert stored[key].keys() == expected[key].keys()
        for name, value in expected[key].items():
            assert stored[key][name] == pytest.approx(value, abs=1e-9), (key, name)
    # Both replicas decide from the same shared state: identical greedy choices.
    ctx = ArtworkContext("u1", region="EU", features={"segment": "a"})
    items = [f"i{k}" for k in range(6)]
    a, b = replicas
    assert a.choose(ctx, items, store.get_counters(a.counter_keys(ctx, items)), explore=False) == (
        b.choose(ctx, items, store.get_counters(b.counter_keys(ctx, items)), explore=False)
    )
