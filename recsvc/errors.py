"""Errors the CLI reports as one clear line (no traceback)."""


class RecsvcError(Exception):
    """Base for user-facing errors raised by the recsvc package."""


class UsageError(RecsvcError):
    """A bad argument, path or setting: the message names it."""
