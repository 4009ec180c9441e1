"""``served_variants``: which variant each logged request showed, on SQLite and real Redis."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest
import redis

from feature_store import ExposureRecord, OnlineStore, open_store

MakeStore = Callable[..., OnlineStore]


def shown(request_id: str, items: list[str], variants: list[str]) -> ExposureRecord:
    return ExposureRecord(
        request_id=request_id,
        user_id="u1",
        timestamp_ms=1_700_000_000_000,
        item_ids=items,
        variant_ids=variants,
        propensities=[0.5] * len(items),
    )


def test_logged_requests_answer_which_variant_each_item_showed(store: OnlineStore) -> None:
    store.log_exposures(
        [
            shown("r1", ["i1", "i2", "i3"], ["a", "b", ""]),  # i3 has no artwork
            shown("r2", ["i1"], ["c"]),
            shown("r-empty", [], []),
        ]
    )
    found = store.served_variants(["r1", "r2", "nope", "r1", "", "r-empty"])
    assert found == {"r1": {"i1": "a", "i2": "b", "i3": ""}, "r2": {"i1": "c"}}
    assert store.served_variants([]) == {}
    # A batch written again (a retried flush) changes nothing.
    store.log_exposures([shown("r2", ["i1"], ["c"])])
    assert store.served_variants(["r2"]) == {"r2": {"i1": "c"}}


def test_many_requests_in_one_lookup(store: OnlineStore) -> None:
    ids = [f"req-{n}" for n in range(1200)]  # more than one SQL ``IN`` chunk
    store.log_exposures([shown(r, [f"i{n % 7}"], [f"v{n % 3}"]) for n, r in enumerate(ids)])
    found = store.served_variants(ids)
    assert len(found) == len(ids)
    assert all(found[r] == {f"i{n % 7}": f"v{n % 3}"} for n, r in enumerate(ids))


def test_served_requests_expire_with_the_event_id_window(make_store: MakeStore) -> None:
    store = make_store(event_id_ttl_s=1)
    store.log_exposures([shown("old", ["i1"], ["a"])])
    assert store.served_variants(["old"]) == {"old": {"i1": "a"}}
    time.sleep(1.3)
    store.log_exposures([shown("new", ["i1"], ["b"])])
    assert store.served_variants(["old", "new"]) == {"new": {"i1": "b"}}


@pytest.mark.redis
def test_redis_keeps_one_hash_tagged_key_per_request_with_a_ttl(
    redis_server_url: str, redis_prefix: str
) -> None:
    store = open_store(redis_server_url, prefix=redis_prefix, socket_timeout_s=2.0)
    client = redis.Redis.from_url(redis_server_url)
    try:
        store.log_exposures([shown("r{x}1", ["i1", "i2"], ["a", "b"])])
        key = f"{redis_prefix}sx:{{r{{x}}1}}"  # the braces: a real hash tag, one slot
        raw = client.get(key)
        assert raw is not None
        row = json.loads(raw)  # the exposure row itself
        assert (row["item_ids"], row["variant_ids"]) == (["i1", "i2"], ["a", "b"])
        assert 0 < client.ttl(key) <= store.settings.event_id_ttl_s  # type: ignore[attr-defined]
        assert store.served_variants(["r{x}1"]) == {"r{x}1": {"i1": "a", "i2": "b"}}
    finally:
        store.close()
        client.close()
