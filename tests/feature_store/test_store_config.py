"""open_store(url): backend by scheme, settings by keyword/query, clear errors naming them."""

from __future__ import annotations

from pathlib import Path

import pytest

from feature_store import FeatureStoreConfigError, StoreSettings, open_store
from feature_store.redis import RedisStore
from feature_store.sqlite import SQLiteStore
from tests.fixtures.redis_server import free_port


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("", "URL"),
        ("postgres://db/1", "unsupported scheme 'postgres'"),
        ("var/store.sqlite", "unsupported scheme ''"),
        ("sqlite://", "file path"),
        ("sqlite:///", "file path"),
        ("sqlite:///:memory:", "real file"),
        ("redis://127.0.0.1:6379/zero", "Redis DB must be a number"),
        ("redis://127.0.0.1:6379/0?bogus=1", "unknown setting 'bogus'"),
        ("redis://127.0.0.1:6379/0?recent_events_cap=0", "'recent_events_cap'='0'"),
        ("redis://127.0.0.1:6379/0?socket_timeout_s=slow", "'socket_timeout_s'='slow'"),
        ("redis://127.0.0.1:port/0", "port"),
    ],
)
def test_bad_url_names_the_setting(url: str, named: str) -> None:
    with pytest.raises(FeatureStoreConfigError, match="feature store") as info:
        open_store(url)
    assert named in str(info.value)


def test_bad_keyword_setting_names_it(tmp_path: Path) -> None:
    with pytest.raises(FeatureStoreConfigError, match="'pool_size'=-1"):
        open_store(f"sqlite:///{tmp_path / 's.db'}", pool_size=-1)


def test_sqlite_url_opens_a_real_wal_file(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "store.sqlite"
    store = open_store(f"sqlite:///{path}", recent_events_cap=7)
    try:
        assert isinstance(store, SQLiteStore)
        assert path.exists()
        assert store.settings.recent_events_cap == 7
        mode = store._conn().execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"
    finally:
        store.close()


def test_not_a_database_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(FeatureStoreConfigError, match=str(path)):
        open_store(f"sqlite:///{path}")


def test_redis_url_takes_settings_from_query_and_keywords() -> None:
    # nothing listens on the port: the store opens all the same (its schema check waits
    # for the first call that reaches Redis), and no real server is written to
    url = f"redis://127.0.0.1:{free_port()}/3?prefix=shop1:&socket_timeout_s=0.05"
    store = open_store(url, pool_size=8)
    try:
        assert isinstance(store, RedisStore)
        assert store.prefix == "shop1:"
        assert store.settings.socket_timeout_s == 0.05
        assert store.settings.pool_size == 8
        assert store._pool.connection_kwargs["db"] == 3
    finally:
        store.close()


def test_defaults_keep_calls_fast_and_memory_bounded() -> None:
    settings = StoreSettings()
    assert settings.recent_events_cap == 100
    assert settings.connect_timeout_s <= 0.1 and settings.socket_timeout_s <= 0.1
    assert settings.log_max_len > 0 and settings.event_id_ttl_s > 0
