"""Server settings (pydantic-settings): command-line flags, else ``RECSVC_*`` env vars.

``RECSVC_AUTH_TOKEN`` is the usual way to give the bearer token, so it never shows in a
process list.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from feature_store.factory import DEFAULT_STORE_URL
from recsvc.events import parse_seen_events

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class ServingSettings(BaseSettings):
    """Everything ``recsvc serve`` can be told."""

    model_config = SettingsConfigDict(env_prefix="RECSVC_", extra="ignore", frozen=True)

    artifacts: Path = Field(description="bundle root; <root>/current is watched for swaps")
    host: str = Field(default="[::]", description="address to listen on")
    port: int = Field(default=50051, ge=0, le=65535, description="gRPC port (0 = pick a free one)")
    feature_store: str = Field(
        default=DEFAULT_STORE_URL, description="sqlite:///PATH, redis://..., or none"
    )
    workers: int = Field(default=1, ge=1, le=64, description="processes sharing the port")
    metrics_port: int = Field(default=0, ge=0, le=65535, description="Prometheus port; 0 = off")
    metrics_host: str = Field(
        default="",
        description="Prometheus bind address; '' = 127.0.0.1 when --host is 127.0.0.1, "
        "else 0.0.0.0",
    )
    tls_cert: Path | None = Field(default=None, description="PEM certificate chain (TLS on)")
    tls_key: Path | None = Field(default=None, description="PEM private key")
    auth_token: str = Field(default="", description="bearer token required on every call; '' = off")
    bandit_policy: str = Field(
        default="auto",
        description="artwork policy name; 'auto' = the contextual bandit (lints) when the "
        "bundle has artwork, else 'default'; 'default' = always the first variant (opt-out)",
    )
    bandit_params: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description='per-policy parameters, e.g. {"ts": {"refresh_ms": 0}} (JSON in '
        "RECSVC_BANDIT_PARAMS); checked when the bundle loads",
    )
    watch_interval_s: float = Field(
        default=1.0, gt=0, le=3600, description="how often to look at current"
    )
    store_retry_s: float = Field(
        default=1.0,
        gt=0,
        le=600,
        description="after a store failure, skip it this long, then probe",
    )
    store_async_reads: bool = Field(
        default=True,
        description="Recommend reads a Redis store (plain TCP) without blocking the event "
        "loop (one pipelined connection); false = the synchronous read",
    )
    grace_s: float = Field(default=10.0, ge=0, le=600, description="drain time on SIGTERM/SIGINT")
    exposure_flush_s: float = Field(
        default=0.2, gt=0, le=60, description="exposure log batch period"
    )
    exposure_batch: int = Field(
        default=64, ge=1, le=100_000, description="exposures queued before a flush starts early"
    )
    exposure_buffer: int = Field(
        default=100_000,
        ge=100,
        description="exposures held while the store is down (oldest dropped)",
    )
    max_concurrent_rpcs: int = Field(
        default=1024, ge=1, description="calls in flight before RESOURCE_EXHAUSTED"
    )
    experiments: bool = Field(default=True, description="route users through running experiments")
    seen_events: str = Field(
        default="view,click,add_to_cart",
        description="event types that hide their item from the user's list, recent events and "
        "the bundle's training history alike, besides purchase, rating and untyped "
        "interactions (always): a comma list of view, click, add_to_cart; 'none' = only "
        "those. A bundle that records no event kinds per cell hides all of its history",
    )
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING, ERROR")

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"{value!r} is not one of {', '.join(LOG_LEVELS)}")
        return level

    @field_validator("seen_events")
    @classmethod
    def _known_seen(cls, value: str) -> str:
        parse_seen_events(value)  # ValueError names the known types
        return value

    @property
    def seen_event_types(self) -> frozenset[str]:
        return parse_seen_events(self.seen_events)

    @model_validator(mode="after")
    def _tls_pair(self) -> ServingSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both or neither")
        return self

    @property
    def store_enabled(self) -> bool:
        return self.feature_store.strip().lower() not in ("", "none")
