"""The input contract read and validated with Spark, by the local job's rules and messages.

Each contract file is ``NAME.csv`` / ``NAME.parquet`` (one file or a directory of part
files) or a directory ``NAME/`` of parts, under any URI Spark reads. Headers go through
:func:`training.data._check_header`. Interaction records are validated on the executors by
the local job's own per-record code (:func:`training.data._interactions_frame`: ids,
timestamps, event types and their weights, the weight column) one Arrow batch at a time;
a batch that fails reports its first bad record with its file, split and position, and
the driver turns that into the file's row number (header = row 1) by counting the records
before it. Users, items and artwork files (the small side) are collected in file order and
validated by the local code as they are (:func:`training.data._entity_frame`); interactions
naming ids those files lack are found with an anti-join and reported as the local job does.

Interactions are folded on the executors: summed weight per (user, item) (the local
``build_matrix``), zero-weight cells kept for the user universe and dropped before ALS.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from recsvc.export.spark import HadoopFs
from training.data import (
    CONTRACT_FILES,
    FIRST_DATA_ROW,
    Dataset,
    _check_header,
    _entity_frame,
    _interactions_frame,
    _normalize_types,
    kind_bits,
    resolve_event_weights,
    unknown_id_message,
)
from training.errors import DataValidationError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

# The local job reports the first bad column in this order (it parses them in this order).
COLUMN_ORDER = ("user_id", "item_id", "timestamp", "event_type", "weight")
_META = ("_file", "_block", "_pos")
# A batch that fails yields one row with a null user_id and its error (rank, file, block,
# position, message, column) as JSON in item_id: the fold stays a hash aggregate of sums
# (a min over an error struct per group forced a sort of every record).
_FOLD_SCHEMA = "user_id string, item_id string, weight double, rows long, kinds int"


@dataclass(frozen=True)
class ContractFile:
    name: str  # interactions | users | items | artwork
    uri: str  # what Spark reads (file or directory)
    fmt: str  # csv | parquet
    files: tuple[tuple[str, int, int], ...]  # (path, bytes, mtime) of every data file

    @property
    def label(self) -> str:
        """How errors name it: the file itself, or the dataset directory of parts."""
        return display(self.files[0][0] if len(self.files) == 1 else self.uri)


def display(uri: str) -> str:
    """A local file as the local job names it (a plain path); other URIs as they are."""
    if uri.startswith("file:"):
        from urllib.parse import unquote, urlparse

        return unquote(urlparse(uri).path)
    return uri


@dataclass
class SparkContract:
    """Validated input: folded interaction cells on Spark, the small files on the driver."""

    cells: DataFrame  # user_id, item_id, weight (summed; zero-weight cells kept), rows
    dataset: Dataset  # users/items/artwork validated frames; interactions left empty
    interaction_rows: int
    files: dict[str, str]


def locate(spark: SparkSession, uri: str) -> dict[str, ContractFile]:
    """The contract files under ``uri`` (interactions required)."""
    fs = HadoopFs(spark, uri)
    if not fs.is_dir(uri):
        raise DataValidationError(f"data directory {uri} does not exist or is not a directory")
    found: dict[str, ContractFile] = {}
    for name in CONTRACT_FILES:
        options = [
            (f"{uri}/{name}.csv", "csv"),
            (f"{uri}/{name}.parquet", "parquet"),
            (f"{uri}/{name}", ""),
        ]
        present = [(u, f) for u, f in options if fs.exists(u)]
        if len(present) > 1:
            first, second = (p[0].rsplit("/", 1)[-1] for p in present[:2])
            raise DataValidationError(
                f"both {first} and {second} exist; keep exactly one of them", file=display(uri)
            )
        if not present:
            continue
        where, fmt = present[0]
        files = [f for f in fs.sizes(where) if not f[0].rsplit("/", 1)[-1].startswith(("_", "."))]
        if not fmt:
            suffixes = {f[0].rsplit(".", 1)[-1] for f in files}
            fmt = "parquet" if "parquet" in suffixes else "csv"
        if not files:
            raise DataValidationError("file is empty (no header, no rows)", file=display(where))
        found[name] = ContractFile(name, where, fmt, tuple(files))
    if "interactions" not in found:
        present_names = ", ".join(sorted(fs.list_names(uri))[:10])
        message = "missing interactions.csv or interactions.parquet (required)"
        raise DataValidationError(
            message + (f"; found: {present_names}" if present_names else ""), file=display(uri)
        )
    return found


def fingerprint(files: Mapping[str, ContractFile]) -> str:
    """sha256 over each file's name, size and modification time (hashing every byte of a
    distributed dataset would cost a full extra read)."""
    digest = hashlib.sha256()
    for name in CONTRACT_FILES:
        if name in files:
            for path, size, mtime in files[name].files:
                digest.update(f"{name}\0{path}\0{size}\0{mtime}\n".encode())
    return "listing:" + digest.hexdigest()


def read_raw(spark: SparkSession, contract: ContractFile) -> DataFrame:
    """The file's records with ``_file``, ``_block`` and ``_pos``: file order is
    (``_file``, ``_block``, ``_pos``) because a split is read front to back."""
    from pyspark.sql import functions as F

    for path, size, _ in contract.files:
        if size == 0:
            raise DataValidationError("file is empty (no header, no rows)", file=display(path))
    if contract.fmt == "csv":
        header = _csv_header(spark, contract)
        _check_header(header, contract.name, contract.label)
        schema = ", ".join(f"`{c}` string" for c in header) + ", `_corrupt` string"
        frame = (
            spark.read.option("header", "true")
            .option("mode", "PERMISSIVE")
            .option("columnNameOfCorruptRecord", "_corrupt")
            .option("multiLine", "true")
            .schema(schema)
            .csv(contract.uri)
        )
    else:
        frame = spark.read.parquet(contract.uri)
        _check_header(list(frame.columns), contract.name, contract.label)
    columns = [c for c in frame.columns]
    return frame.select(
        *[F.col(f"`{c}`") for c in columns],
        F.col("_metadata.file_path").alias("_file"),
        F.col("_metadata.file_block_start").alias("_block"),
        F.monotonically_increasing_id().alias("_pos"),
    )


def _csv_header(spark: SparkSession, contract: ContractFile) -> list[str]:
    first = spark.read.text(contract.files[0][0]).limit(1).collect()
    if not first:
        raise DataValidationError(
            "file is empty (no header)", file=display(contract.files[0][0]), row=1
        )
    header = next(csv.reader([str(first[0][0]).lstrip("\ufeff")]), [])
    if not header or all(not h.strip() for h in header):
        raise DataValidationError(
            "file is empty (no header)", file=display(contract.files[0][0]), row=1
        )
    return header


def row_number(raw: DataFrame, file: str, block: int, pos: int) -> int:
    """File row (header = 1) of the record at (file, block, pos)."""
    from pyspark.sql import functions as F

    before = raw.filter(
        (F.col("_file") == file)
        & ((F.col("_block") < block) | ((F.col("_block") == block) & (F.col("_pos") < pos)))
    ).count()
    return int(before) + FIRST_DATA_ROW


def read_entity(spark: SparkSession, contract: ContractFile) -> pd.DataFrame:
    """A users/items/artwork file collected in file order and validated by the local code."""
    raw = read_raw(spark, contract)
    table = raw.orderBy("_file", "_block", "_pos").toArrow()
    corrupt = "_corrupt" in table.column_names
    if corrupt:
        bad = np.flatnonzero(~np.asarray(table.column("_corrupt").is_null()))
        if bad.size:
            raise DataValidationError(
                "cannot parse CSV: wrong number of fields",
                file=contract.label,
                row=int(bad[0]) + FIRST_DATA_ROW,
            )
    data = table.drop_columns([*_META, *(["_corrupt"] if corrupt else [])])
    if data.num_rows == 0:
        raise DataValidationError("file has a header but no data rows", file=contract.label)
    data = _normalize_types(data, contract.name, contract.label)
    frame = _entity_frame({contract.name: data}, {contract.name: contract.label}, contract.name)
    assert frame is not None
    return frame


def _validate_batches(label: str, weights: Mapping[str, float]) -> Any:
    """mapInArrow function: each batch through the local per-record validation."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            table = pa.Table.from_batches([batch])
            meta = {m: table.column(m) for m in _META}
            data = table.drop_columns(list(_META))
            corrupt = None
            if "_corrupt" in data.column_names:
                corrupt = data.column("_corrupt")
                data = data.drop_columns(["_corrupt"])
            try:
                if corrupt is not None and corrupt.null_count < len(corrupt):
                    first = int(np.flatnonzero(~np.asarray(corrupt.is_null()))[0])
                    raise DataValidationError(
                        "cannot parse CSV: wrong number of fields", row=first + FIRST_DATA_ROW
                    )
                frame = _interactions_frame(
                    _normalize_types(data, "interactions", label), label, weights
                )
            except DataValidationError as exc:
                at = max(0, (exc.row or FIRST_DATA_ROW) - FIRST_DATA_ROW)
                rank = COLUMN_ORDER.index(exc.column) if exc.column in COLUMN_ORDER else -1
                yield _error_batch(rank, meta, at, exc.detail, exc.column)
                continue
            yield pa.RecordBatch.from_pydict(
                {
                    "user_id": pa.array(frame["user_id"].astype(str).to_numpy(), pa.string()),
                    "item_id": pa.array(frame["item_id"].astype(str).to_numpy(), pa.string()),
                    "weight": pa.array(frame["weight"].to_numpy(np.float64), pa.float64()),
                    "rows": pa.array(np.ones(len(frame), np.int64)),
                    "kinds": pa.array(kind_bits(frame).astype(np.int32), pa.int32()),
                }
            )

    return run


def _error_batch(
    rank: int, meta: Mapping[str, pa.ChunkedArray], at: int, message: str, column: str | None
) -> pa.RecordBatch:
    error = [rank, *(meta[m][at].as_py() for m in _META), message, column]
    return pa.RecordBatch.from_pydict(
        {
            "user_id": pa.nulls(1, pa.string()),
            "item_id": pa.array([json.dumps(error)], pa.string()),
            "weight": pa.array([0.0]),
            "rows": pa.array([0], pa.int64()),
            "kinds": pa.array([0], pa.int32()),
        }
    )


def _first_error(errors: list[str]) -> list[Any]:
    """The error the local job reports: lowest column rank, then file order
    (rank, file, block, position, message, column)."""
    return min((json.loads(e) for e in errors), key=lambda e: (e[0], e[1], e[2], e[3]))


def read_contract(
    spark: SparkSession, uri: str, event_weights: Mapping[str, float] | None = None
) -> SparkContract:
    """Read + validate everything; raises ``DataValidationError`` like ``load_dataset``."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    weights = resolve_event_weights(event_weights)
    files = locate(spark, uri)
    # The local order of checks: users and items files, interaction records, ids, artwork.
    users = read_entity(spark, files["users"]) if "users" in files else None
    items = read_entity(spark, files["items"]) if "items" in files else None
    inter = files["interactions"]
    raw = read_raw(spark, inter)
    validated = raw.mapInArrow(_validate_batches(inter.label, weights), _FOLD_SCHEMA)
    cells = (
        validated.groupBy("user_id", "item_id")
        .agg(
            F.sum("weight").alias("weight"),
            F.sum("rows").alias("rows"),
            # which kinds of event made the cell (the bundle's seen rule), as the local fold
            F.expr("bit_or(kinds)").alias("kinds"),
        )
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    problems = cells.filter(F.col("user_id").isNull()).select("item_id").collect()
    if problems:
        cells.unpersist()
        _, file, block, pos, message, column = _first_error([p["item_id"] for p in problems])
        row = row_number(raw, file, block, pos)
        raise DataValidationError(message, file=display(file), row=row, column=column)
    totals = cells.agg(F.sum("rows").alias("rows"), F.count("*").alias("cells")).collect()[0]
    if not totals["rows"]:
        raise DataValidationError("file has a header but no data rows", file=inter.label)
    labels = {name: f.label for name, f in files.items()}
    for key, frame, source in (("user_id", users, "users"), ("item_id", items, "items")):
        if frame is not None:
            _check_known(spark, raw, cells, frame, key, labels, source)
    artwork = read_entity(spark, files["artwork"]) if "artwork" in files else None
    if artwork is not None:
        _check_artwork(spark, artwork, items, cells, labels)
    dataset = Dataset(
        interactions=pd.DataFrame(
            {"user_id": [], "item_id": [], "timestamp": [], "event_type": [], "weight": []}
        ),
        users=users,
        items=items,
        artwork=artwork,
        fingerprint=fingerprint(files),
        files=labels,
    )
    return SparkContract(
        cells=cells.select("user_id", "item_id", "weight", "rows", "kinds"),
        dataset=dataset,
        interaction_rows=int(totals["rows"]),
        files=labels,
    )


def _check_known(
    spark: SparkSession,
    raw: DataFrame,
    cells: DataFrame,
    frame: pd.DataFrame,
    key: str,
    labels: Mapping[str, str],
    source: str,
) -> None:
    from pyspark.sql import functions as F

    known = spark.createDataFrame(pd.DataFrame({key: frame[key].astype(str).to_numpy()}))
    unknown = cells.select(key).distinct().join(known, key, "left_anti")
    count = unknown.count()
    if not count:
        return
    first = (
        raw.join(F.broadcast(unknown), key)
        .agg(F.min(F.struct("_file", "_block", "_pos", key)).alias("m"))
        .collect()[0]["m"]
    )
    raise DataValidationError(
        unknown_id_message(key, first[key], labels[source], count),
        file=display(first["_file"]),
        row=row_number(raw, first["_file"], first["_block"], first["_pos"]),
        column=key,
    )


def _check_artwork(
    spark: SparkSession,
    artwork: pd.DataFrame,
    items: pd.DataFrame | None,
    cells: DataFrame,
    labels: Mapping[str, str],
) -> None:
    from training.data import _check_artwork_items

    if items is not None:
        _check_artwork_items(artwork, items, pd.DataFrame(), labels)
        return
    seen = cells.select("item_id").distinct().toArrow().column("item_id").to_pylist()
    interactions = pd.DataFrame({"item_id": pd.Categorical(sorted(seen))})
    _check_artwork_items(artwork, None, interactions, labels)


def universe(contract: SparkContract) -> tuple[np.ndarray, np.ndarray]:
    """(user ids, item ids), sorted as the local ``build_matrix`` orders them: users of the
    interactions; items of the items file and the interactions."""
    users = contract.cells.select("user_id").distinct().toArrow().column("user_id")
    items = contract.cells.select("item_id").distinct().toArrow().column("item_id")
    user_ids = np.sort(np.asarray(users.to_numpy(zero_copy_only=False), dtype=object))
    parts = [np.asarray(items.to_numpy(zero_copy_only=False), dtype=object)]
    if contract.dataset.items is not None:
        parts.append(contract.dataset.items["item_id"].to_numpy(dtype=object))
    item_ids = np.asarray(pd.Index(np.concatenate(parts)).unique().sort_values(), dtype=object)
    return user_ids, item_ids
