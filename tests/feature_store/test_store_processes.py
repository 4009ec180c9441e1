"""Two processes hammering the same counters end with exact totals (both backends)."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable

from feature_store import OnlineStore
from tests.feature_store.store_workers import hammer

N = 150


def test_two_processes_exact_counters_and_idempotency(
    make_store: Callable[..., OnlineStore],
) -> None:
    store = make_store()  # creates the schema / checks the server before the children start
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    url, settings = make_store.url, make_store.settings  # type: ignore[attr-defined]
    procs = [ctx.Process(target=hammer, args=(url, settings, w, N, barrier, out)) for w in (0, 1)]
    for p in procs:
        p.start()
    try:
        results = sorted(out.get(timeout=120) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    assert [err for _, _, err in results] == [None, None]
    assert sum(fresh for _, fresh, _ in results) == N  # each shared event id counted once
    counters = store.get_counters(["hot"])["hot"]
    assert counters == {"n": 2.0 * N, "half": 1.0 * N, "events": 1.0 * N, "own": 2.0 * N}
    assert len(list(store.read_log("event"))) == 3 * N
