"""Errors raised by the offline job; the CLI prints them as one line and exits non-zero."""

from __future__ import annotations


class TrainingError(Exception):
    """Base for user-facing training errors."""


class DataValidationError(TrainingError):
    """Bad input data. The message names the file, the row (1-based, header = row 1) and column."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        row: int | None = None,
        column: str | None = None,
    ) -> None:
        self.file = file
        self.row = row
        self.column = column
        where = []
        if file is not None:
            where.append(f"file {file}")
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column '{column}'")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class BundleError(TrainingError):
    """An artifact bundle is missing, corrupt or fails validation."""
