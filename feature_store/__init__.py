"""Online feature store: user profiles, recent events, bandit counters, exposure/event log.

``open_store(url)`` returns an :class:`OnlineStore` for ``sqlite:///PATH`` or
``redis://HOST:PORT/DB``. Imports neither ``training`` nor ``recsvc``.
"""

from feature_store.base import (
    EVENT_TYPES,
    CounterDelta,
    ExposureRecord,
    LogKind,
    OnlineStore,
    StoredEvent,
    UserState,
)
from feature_store.config import StoreSettings
from feature_store.errors import (
    FeatureStoreConfigError,
    FeatureStoreError,
    FeatureStoreSchemaError,
    FeatureStoreUnavailable,
)
from feature_store.factory import DEFAULT_STORE_URL, open_store

__all__ = [
    "DEFAULT_STORE_URL",
    "EVENT_TYPES",
    "CounterDelta",
    "ExposureRecord",
    "FeatureStoreConfigError",
    "FeatureStoreError",
    "FeatureStoreSchemaError",
    "FeatureStoreUnavailable",
    "LogKind",
    "OnlineStore",
    "StoreSettings",
    "StoredEvent",
    "UserState",
    "open_store",
]
