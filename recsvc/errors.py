"""Errors the CLI reports as one clear line (no traceback)."""


class RecsvcError(Exception):
    """Base for user-facing errors raised by the recsvc package."""


class UsageError(RecsvcError):
    """A bad argument, path or setting: the message names it."""


class DataValidationError(RecsvcError):
    """Bad input data. The message names the file, the row (1-based, header = row 1) and column."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        row: int | None = None,
        column: str | None = None,
    ) -> None:
        self.detail = message  # without the file/row/column prefix (re-located by Spark)
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
