"""Errors raised by the offline job; the CLI prints them as one line and exits non-zero."""

from __future__ import annotations

from recsvc.errors import DataValidationError

__all__ = ["DataValidationError", "TrainingError"]


class TrainingError(Exception):
    """Base for user-facing training errors."""
