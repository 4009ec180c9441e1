"""Shared fixtures. Area-specific fixtures live in tests/<area>/conftest.py.

Redis: tests marked ``redis`` use ``RECSVC_TEST_REDIS_URL`` (default
redis://127.0.0.1:6379/13) with a per-test key prefix and delete only that prefix. With
``RECSVC_REQUIRE_REDIS=1`` (CI) a missing Redis is a failure, not a skip.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

pytest_plugins = [
    "tests.fixtures.data",
    "tests.fixtures.bundle",
    "tests.fixtures.redis_server",
    "tests.fixtures.redis_cluster",
]

REDIS_URL = os.environ.get("RECSVC_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
REQUIRE_REDIS = os.environ.get("RECSVC_REQUIRE_REDIS", "") not in ("", "0", "false")


def _redis_reachable(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        return bool(client.ping())
    except Exception:
        return False


@pytest.fixture(scope="session")
def redis_server_url() -> str:
    """URL of the real Redis server for tests; fails in CI when unreachable, else skips."""
    if not _redis_reachable(REDIS_URL):
        message = f"Redis not reachable at {REDIS_URL}"
        if REQUIRE_REDIS:
            pytest.fail(message + " and RECSVC_REQUIRE_REDIS=1", pytrace=False)
        pytest.skip(message)
    return REDIS_URL


@pytest.fixture
def redis_prefix(redis_server_url: str) -> Iterator[str]:
    """A unique key prefix for one test; its keys are deleted afterwards (only those)."""
    import redis

    prefix = f"recsvc-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_server_url)
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)
