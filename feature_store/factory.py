"""``open_store(url)``: pick the backend from the URL scheme (Feast's config-by-URL)."""

from __future__ import annotations

from typing import Any
from urllib.parse import SplitResult, parse_qsl, urlsplit

from pydantic import ValidationError

from feature_store.base import OnlineStore
from feature_store.config import StoreSettings
from feature_store.errors import FeatureStoreConfigError

# The store a CLI or server uses when none is named: a file under the working directory,
# so a first run needs no Redis.
DEFAULT_STORE_URL = "sqlite:///var/feature-store.sqlite"
SCHEMES = ("sqlite", "redis", "rediss", "redis+cluster", "rediss+cluster")
URL_HINT = (
    "expected sqlite:///PATH, redis://HOST:PORT/DB[?prefix=...] (rediss:// for TLS) or "
    "redis+cluster://HOST:PORT[,HOST:PORT...][?prefix=...] (rediss+cluster:// for TLS)"
)


def load_settings(setting_name: str = "feature store", **values: Any) -> StoreSettings:
    """Validate settings; a bad one raises FeatureStoreConfigError naming it and its value."""
    try:
        return StoreSettings(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = ".".join(str(p) for p in err.get("loc", ())) or "?"
        value = values.get(name, err.get("input"))
        raise FeatureStoreConfigError(
            f"{setting_name} setting '{name}'={value!r}: {err.get('msg', 'invalid')}"
        ) from None


def open_store(url: str, **settings: Any) -> OnlineStore:
    """Open the store at ``url`` (``sqlite:///PATH``, ``redis://HOST:PORT/DB`` or
    ``redis+cluster://SEED[,SEED...]``, seeds being ``HOST:PORT`` nodes of a Redis Cluster).

    Settings (see :class:`StoreSettings`) come from keyword arguments, then the URL query
    string, then ``RECSVC_STORE_*`` environment variables. Raises FeatureStoreConfigError
    naming the setting for a bad URL, scheme or value.
    """
    parts, config, path = _checked(url, settings)
    if path is not None:
        from feature_store.sqlite import SQLiteStore

        return SQLiteStore(path, config)
    if parts.scheme.endswith("+cluster"):
        from feature_store.redis_cluster import RedisClusterStore

        return RedisClusterStore(url, config)
    from feature_store.redis import RedisStore

    return RedisStore(url, config)


def sqlite_path(url: str, netloc: str, path: str) -> str:
    """``sqlite:///rel/x.db`` → ``rel/x.db``; ``sqlite:////abs/x.db`` → ``/abs/x.db``."""
    if netloc or not path.startswith("/") or path in ("/", ""):
        raise FeatureStoreConfigError(
            f"feature store URL {url!r}: a SQLite URL needs a file path after "
            f"'sqlite:///' (sqlite:///var/store.sqlite, sqlite:////abs/store.sqlite)"
        )
    rel = path[1:]
    if rel.endswith("/"):
        raise FeatureStoreConfigError(
            f"feature store URL {url!r}: the SQLite path names a directory, not a file"
        )
    return rel


def check_url(url: str, **settings: Any) -> None:
    """Refuse a bad store URL as :func:`open_store` would, without connecting or creating
    anything: for commands that open the store only after long work."""
    _checked(url, settings)


def _checked(url: str, settings: dict[str, Any]) -> tuple[SplitResult, StoreSettings, str | None]:
    """The parsed URL, its settings and (SQLite only) the database path; every check
    :func:`open_store` makes before it opens anything."""
    if not isinstance(url, str) or not url.strip():
        raise FeatureStoreConfigError(f"feature store URL {url!r} is empty; {URL_HINT}")
    try:
        parts = urlsplit(url.strip())
        query = dict(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True))
    except ValueError as exc:
        raise FeatureStoreConfigError(f"feature store URL {url!r}: {exc}; {URL_HINT}") from None
    if parts.scheme not in SCHEMES:
        raise FeatureStoreConfigError(
            f"feature store URL {url!r}: unsupported scheme {parts.scheme!r}; {URL_HINT}"
        )
    values: dict[str, Any] = {**query, **settings}
    unknown = sorted(set(values) - set(StoreSettings.model_fields))
    if unknown:
        raise FeatureStoreConfigError(
            f"feature store URL {url!r}: unknown setting {unknown[0]!r}; "
            f"known: {', '.join(StoreSettings.model_fields)}"
        )
    config = load_settings(f"feature store URL {url!r}", **values)
    path = sqlite_path(url, parts.netloc, parts.path) if parts.scheme == "sqlite" else None
    return parts, config, path
