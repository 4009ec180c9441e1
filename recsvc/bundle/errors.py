"""The bundle's one error type: a bundle is missing, corrupt or fails validation."""

from __future__ import annotations

from recsvc.errors import RecsvcError


class BundleError(RecsvcError):
    """An artifact bundle is missing, corrupt or fails validation (the message names the file)."""
