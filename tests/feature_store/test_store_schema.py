"""Each store carries its schema version, checked at open: SQLite's ``user_version``, Redis's
``{prefix}schema`` key. Another version is refused with one line naming the store."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import redis

from feature_store import (
    FeatureStoreSchemaError,
    FeatureStoreUnavailable,
    StoredEvent,
    open_store,
)
from feature_store.redis import SCHEMA_VERSION as REDIS_VERSION
from feature_store.redis import public_url
from feature_store.sqlite import SCHEMA_VERSION as SQLITE_VERSION
from recsvc.cli import main
from tests.fixtures.redis_server import ThrowawayRedis, free_port


def _user_version(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _set_user_version(path: Path, version: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.commit()
    conn.close()


def test_sqlite_new_file_gets_the_version_and_reopens(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    store = open_store(f"sqlite:///{path}")
    store.write_user_profiles([("u1", {"region": "US"})])
    store.close()
    assert _user_version(path) == SQLITE_VERSION == 1
    again = open_store(f"sqlite:///{path}")
    try:
        assert again.read_user("u1")[0].profile == {"region": "US"}
    finally:
        again.close()


def test_sqlite_file_of_another_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    open_store(f"sqlite:///{path}").close()
    _set_user_version(path, 7)
    with pytest.raises(FeatureStoreSchemaError) as info:
        open_store(f"sqlite:///{path}")
    message = str(info.value)
    assert str(path) in message and "schema version 7" in message
    assert f"reads version {SQLITE_VERSION}" in message and "recsvc materialize" in message
    assert "\n" not in message
    assert _user_version(path) == 7  # refused, not rewritten


def test_sqlite_empty_file_is_a_new_store(tmp_path: Path) -> None:
    """A zero-byte file (``touch``) has user_version 0: tables are created, version set."""
    path = tmp_path / "store.sqlite"
    path.touch()
    open_store(f"sqlite:///{path}").close()
    assert _user_version(path) == SQLITE_VERSION


def test_cli_prints_the_schema_error_as_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "store.sqlite"
    open_store(f"sqlite:///{path}").close()
    _set_user_version(path, 3)
    code = main(["experiments", "list", "--feature-store", f"sqlite:///{path}"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("recsvc experiments: error: feature store SQLite file")
    assert "schema version 3" in err


@pytest.mark.redis
def test_redis_open_sets_the_version_key_once(redis_server_url: str, redis_prefix: str) -> None:
    client = redis.Redis.from_url(redis_server_url)
    store = open_store(redis_server_url, prefix=redis_prefix)
    try:
        assert client.get(redis_prefix + "schema") == REDIS_VERSION.encode() == b"2"
        assert client.ttl(redis_prefix + "schema") == -1  # no expiry: it describes the keys
        store.write_user_profiles([("u1", {"region": "US"})])
    finally:
        store.close()
    again = open_store(redis_server_url, prefix=redis_prefix)
    try:
        assert again.read_user("u1")[0].profile == {"region": "US"}
    finally:
        again.close()
        client.close()


@pytest.mark.redis
def test_redis_prefix_of_another_version_is_refused(
    redis_server_url: str, redis_prefix: str
) -> None:
    client = redis.Redis.from_url(redis_server_url)
    client.set(redis_prefix + "schema", "1")  # the layout before hash tags
    try:
        with pytest.raises(FeatureStoreSchemaError) as info:
            open_store(redis_server_url, prefix=redis_prefix)
        message = str(info.value)
        assert redis_server_url in message and repr(redis_prefix) in message
        assert "version '1'" in message and f"reads version {REDIS_VERSION}" in message
        assert "\n" not in message
        assert client.get(redis_prefix + "schema") == b"1"  # refused, not rewritten
        # Another prefix on the same server is its own store.
        other = open_store(redis_server_url, prefix=redis_prefix + "v1:")
        other.close()
    finally:
        client.close()


def test_redis_down_at_open_is_checked_by_the_first_call_that_reaches_it(
    tmp_path: Path,
) -> None:
    server = ThrowawayRedis(workdir=tmp_path)
    store = open_store(server.url, prefix="t:")  # nothing listens yet: opens all the same
    try:
        with pytest.raises(FeatureStoreUnavailable):
            store.read_user("u1")
        try:
            server.start()
        except FileNotFoundError as exc:
            pytest.skip(str(exc))
        client = redis.Redis.from_url(server.url)
        client.set("t:schema", "9")
        with pytest.raises(FeatureStoreSchemaError, match="version '9'"):
            store.read_user("u1")
        with pytest.raises(FeatureStoreSchemaError):  # every call, not just the first
            store.record_events([StoredEvent("e1", "u1", "i1", "click", 1)])
        assert client.get("t:seen:e1") is None
        client.set("t:schema", REDIS_VERSION)
        assert store.record_events([StoredEvent("e1", "u1", "i1", "click", 1)]) == [True]
        client.delete("t:schema")  # checked once: later calls do not look again
        assert store.read_user("u1")[0].recent_events[0].event_id == "e1"
        client.close()
    finally:
        store.close()
        server.kill()


def test_messages_mask_the_redis_password() -> None:
    port = free_port()
    assert public_url(f"redis://:s3cret@127.0.0.1:{port}/3") == f"redis://:***@127.0.0.1:{port}/3"
    assert public_url("redis://user:pw@h:1/0?prefix=a:") == "redis://user:***@h:1/0?prefix=a:"
    assert public_url("redis://h:1/0") == "redis://h:1/0"
