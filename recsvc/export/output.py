"""Streamed, atomic CSV/Parquet output with a manifest next to it.

Rows go to a temporary file in the destination directory; only a complete file is renamed
to the final path (never a half file there), and ``FILE.manifest.json`` records what was
written and its sha256.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from recsvc.bundle import fsync_dir, fsync_file
from recsvc.errors import UsageError

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def output_format(path: Path) -> str:
    """``csv`` or ``parquet`` from the file name; anything else is a usage error."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UsageError(f"--out {path}: the name must end in .csv or .parquet")
    return fmt


def manifest_path(path: Path) -> Path:
    return path.with_name(path.name + ".manifest.json")


def check_writable(path: Path) -> None:
    """Fail now, before any work, if ``path`` cannot be created (dir missing, no rights)."""
    output_format(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"--out {path}: directory {parent} does not exist")
    if path.is_dir():
        raise UsageError(f"--out {path} is a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"--out {path}: cannot write in {parent}: {exc.strerror}") from None
    if path.exists() and not os.access(path, os.W_OK):
        raise UsageError(f"--out {path} exists and is not writable")


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


class AtomicTableWriter:
    """Append Arrow batches of a fixed schema; ``commit()`` publishes, ``abort()`` discards.

    Use as a context manager: leaving the block by an exception aborts (the temp file is
    removed and the final path is untouched).
    """

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self.format = output_format(path)
        self.schema = schema
        self.rows = 0
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        self._tmp = Path(tmp)
        self._writer: pq.ParquetWriter | pacsv.CSVWriter
        if self.format == "parquet":
            self._writer = pq.ParquetWriter(self._tmp, schema, compression="zstd")
        else:
            self._writer = pacsv.CSVWriter(
                self._tmp, schema, write_options=pacsv.WriteOptions(quoting_style="needed")
            )
        self._open = True

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self._writer.write_table(table.select(self.schema.names).cast(self.schema))
            self.rows += table.num_rows

    def commit(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Close, fsync, checksum, rename into place, then write the manifest (atomically)."""
        self._close()
        fsync_file(self._tmp)
        full = {
            **manifest,
            "output": {
                "path": str(self.path),
                "format": self.format,
                "rows": self.rows,
                "bytes": self._tmp.stat().st_size,
                "sha256": sha256_file(self._tmp),
                "columns": self.schema.names,
            },
        }
        os.chmod(self._tmp, created_mode())
        os.replace(self._tmp, self.path)
        write_json_atomic(manifest_path(self.path), full)
        with contextlib.suppress(OSError):
            fsync_dir(self.path.parent)
        return full

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._close()
        with contextlib.suppress(FileNotFoundError):
            self._tmp.unlink()

    def _close(self) -> None:
        if self._open:
            self._open = False
            self._writer.close()

    def __enter__(self) -> AtomicTableWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None or self._open:
            self.abort()


def created_mode() -> int:
    """The mode ``open()`` would give a new file (0644 under the usual umask 022): the temp
    files behind the atomic rename are 0600 (mkstemp), which would leave the output
    unreadable to the group that consumes it."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def write_json_atomic(path: Path, doc: Mapping[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=2, sort_keys=False, default=str)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, created_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
