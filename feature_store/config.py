"""Feature-store settings (pydantic): limits that keep memory bounded and calls fast.

Every setting can come from ``open_store(url, **settings)``, from the URL query string
(``redis://127.0.0.1:6379/0?prefix=shop1:&socket_timeout_s=0.05``) or from the
environment (``RECSVC_STORE_<NAME>``), in that order of precedence.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DAY_S = 24 * 3600


class StoreSettings(BaseSettings):
    """Limits shared by both backends (Redis-only ones say so)."""

    model_config = SettingsConfigDict(env_prefix="RECSVC_STORE_", extra="forbid", frozen=True)

    recent_events_cap: int = Field(
        default=100, ge=1, le=100_000, description="events kept per user"
    )
    recent_events_ttl_s: int = Field(
        default=30 * DAY_S,
        ge=1,
        description="a user's recent events expire this long after the last one",
    )
    event_id_ttl_s: int = Field(
        default=7 * DAY_S, ge=1, description="how long a seen event_id is remembered (idempotency)"
    )
    log_max_len: int = Field(
        default=1_000_000,
        ge=10,
        description="rows kept per log (exposure, event); older ones trimmed",
    )
    counters_ttl_s: int = Field(
        default=0,
        ge=0,
        description="counter hashes expire this long after their last update; 0 = never",
    )
    connect_timeout_s: float = Field(default=0.1, gt=0, le=30, description="Redis connect timeout")
    socket_timeout_s: float = Field(
        default=0.1, gt=0, le=30, description="Redis read/write timeout"
    )
    pool_size: int = Field(
        default=64,
        ge=1,
        le=10_000,
        description="Redis connections per process and pool (the request read has its own)",
    )
    busy_timeout_ms: int = Field(
        default=2000,
        ge=0,
        le=600_000,
        description="SQLite: wait this long for another writer's lock",
    )
    prefix: str = Field(default="recsvc:", max_length=200, description="Redis: prefix of every key")
    wait_replicas: int = Field(
        default=1,
        ge=0,
        le=16,
        description="Redis Cluster: an event write is acknowledged once this many replicas of "
        "each master it touched hold it (WAIT); a master with no replica connected at all "
        "(after a failover, until one rejoins) acknowledges alone. 0 = the master alone",
    )
    wait_timeout_ms: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="Redis Cluster: how long an event write waits for its replicas (WAIT)",
    )
    write_batch: int = Field(
        default=500, ge=1, le=100_000, description="rows per transaction/script call in bulk writes"
    )
