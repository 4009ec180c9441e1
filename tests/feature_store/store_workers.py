"""Worker functions for the multi-process tests (importable by spawned children)."""

from __future__ import annotations

from typing import Any

from feature_store import CounterDelta, StoredEvent, open_store


def hammer(url: str, settings: dict[str, Any], worker: int, n: int, barrier: Any, out: Any) -> None:
    """Increment the shared counters ``n`` times and record ``n`` events whose ids every
    worker also records (only one may count each); report how many of those were new."""
    store = open_store(url, **settings)
    try:
        barrier.wait(timeout=60)
        fresh = 0
        for k in range(n):
            store.incr_counters([CounterDelta("hot", "n", 1), CounterDelta("hot", "half", 0.5)])
            shared = StoredEvent(f"shared-{k}", f"user-{k % 5}", f"item-{k % 3}", "click", k)
            own = StoredEvent(f"own-{worker}-{k}", "solo", "item-0", "impression", k)
            flags = store.record_events(
                [shared, own],
                [[CounterDelta("hot", "events", 1)], [CounterDelta("hot", "own", 1)]],
            )
            fresh += int(flags[0])
        out.put((worker, fresh, None))
    except BaseException as exc:
        out.put((worker, -1, repr(exc)))
    finally:
        store.close()
