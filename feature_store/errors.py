"""Typed feature-store errors."""


class FeatureStoreError(Exception):
    """Base for feature-store errors."""


class FeatureStoreConfigError(FeatureStoreError):
    """Bad store URL or setting; the message names the setting."""


class FeatureStoreSchemaError(FeatureStoreError):
    """The store was written with another schema version than this code reads; the message
    names the store, both versions and what to do."""


class FeatureStoreUnavailable(FeatureStoreError):
    """The backend could not be reached within the bounded timeout. Callers degrade."""
