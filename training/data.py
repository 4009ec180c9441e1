"""Contract files (the README's "Input data contract"): load, validate, fold.

``load_dataset(DIR)`` reads ``interactions`` (required), ``users``, ``items`` and
``artwork`` (optional), each as ``NAME.csv`` or ``NAME.parquet``, validates them and returns a
``Dataset``; ``build_matrix`` folds interactions into a users x items CSR matrix.

Row numbers in errors count rows the way a spreadsheet shows a CSV file: the header is row 1
and the first record is row 2. Parquet files are numbered the same way (first record = row 2)
so one message format fits both.

Representation (chosen so 20M interaction rows load in seconds and fit in memory):
- ``interactions.user_id`` / ``item_id`` / ``event_type`` are pandas ``category`` columns whose
  categories are the sorted distinct str ids; ``timestamp`` is int64 epoch seconds;
  ``weight`` is float32 (event-type weight x the file's ``weight`` column).
- users/items/artwork columns are ``str``; missing feature values are ``""``.
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import hashlib
import itertools
import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import scipy.sparse as sp

from recsvc.events import DEFAULT_EVENT_WEIGHTS, seen_class_bit
from training.errors import DataValidationError

CONTRACT_FILES: tuple[str, ...] = ("interactions", "users", "items", "artwork")
FORMATS: tuple[str, ...] = (".csv", ".parquet")
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "interactions": ("user_id", "item_id", "timestamp"),
    "users": ("user_id",),
    "items": ("item_id",),
    "artwork": ("item_id", "variant_id"),
}
OPTIONAL_COLUMNS: dict[str, tuple[str, ...]] = {
    "interactions": ("event_type", "weight"),
    "users": ("region",),
    "items": ("regions",),
    "artwork": (),
}
KEY_COLUMNS: dict[str, tuple[str, ...]] = {
    "users": ("user_id",),
    "items": ("item_id",),
    "artwork": ("item_id", "variant_id"),
}
# Interaction string columns kept as dictionary codes from the reader (few distinct values).
DICTIONARY_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "event_type")
# event_type given to rows of a file without an event_type column (weight 1 each).
NO_EVENT_TYPE = "interaction"
REGION_SEPARATOR = "|"
# Separators people use for lists that are not ours: "DE;FR" would silently be one region.
FOREIGN_REGION_SEPARATORS = (";", ",")
# The largest weight training accepts, in the file column and per event type (a product of
# the two stays far inside float32).
# Confidences are relative: a model needs their ratios, and sums and squares of ~1e300
# overflow float32 into NaN factors; 1e6 keeps every product and sum finite.
MAX_WEIGHT = 1e6
FIRST_DATA_ROW = 2  # header is row 1
# Epoch seconds past this (year ~5138) are almost surely milliseconds.
_MAX_EPOCH_SECONDS = 1e11
_HASH_BLOCK = 1 << 20


@dataclass(frozen=True)
class Dataset:
    """Validated contract files. IDs are str; feature columns are str (categorical)."""

    interactions: pd.DataFrame  # user_id, item_id, timestamp (int64 epoch s), event_type, weight
    users: pd.DataFrame | None  # user_id, [region], other feature columns
    items: pd.DataFrame | None  # item_id, [regions] ("|"-separated, "" = everywhere), others
    artwork: pd.DataFrame | None  # item_id, variant_id, attribute columns
    fingerprint: str  # sha256 over the input files' bytes
    files: Mapping[str, str]  # contract name -> path read


@dataclass(frozen=True)
class InteractionMatrix:
    """Users x items confidence matrix, duplicates folded (summed weights)."""

    user_ids: np.ndarray  # [U] str, sorted
    item_ids: np.ndarray  # [I] str, sorted; union of items file and interactions
    matrix: sp.csr_matrix  # [U, I] float32
    # [nnz] uint8 aligned with matrix.data: bit i set = an interaction of kind
    # recsvc.events.SEEN_CLASSES[i] made the cell (build_matrix(kinds=True); else None).
    seen_by: np.ndarray | None = None


# --- public API ---------------------------------------------------------------------------


def load_dataset(data_dir: Path, event_weights: Mapping[str, float] | None = None) -> Dataset:
    """Read and validate the contract files in ``data_dir``.

    ``event_weights`` extends/overrides ``DEFAULT_EVENT_WEIGHTS``; an event type with no
    weight is refused. Raises ``DataValidationError`` naming file, row and column.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataValidationError(f"data directory {data_dir} does not exist or is not a directory")
    paths = {name: _locate(data_dir, name) for name in CONTRACT_FILES}
    interactions_path = paths["interactions"]
    if interactions_path is None:
        raise DataValidationError(_missing_interactions_message(data_dir), file=str(data_dir))
    # Hashing the bytes overlaps with parsing them (hashlib and pyarrow release the GIL).
    stop = threading.Event()
    hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fingerprint")
    fingerprint = hasher.submit(_fingerprint_files, paths, stop)
    try:
        tables = {name: _read_table(path, name) for name, path in paths.items() if path is not None}
        labels = {name: str(path) for name, path in paths.items() if path is not None}
        return _validate(tables, labels, event_weights, fingerprint)
    finally:
        stop.set()
        hasher.shutdown(wait=False)


def dataset_from_frames(
    interactions: pd.DataFrame,
    users: pd.DataFrame | None = None,
    items: pd.DataFrame | None = None,
    artwork: pd.DataFrame | None = None,
    event_weights: Mapping[str, float] | None = None,
) -> Dataset:
    """Validate in-memory frames exactly as files would be (errors name ``<interactions>``…).

    Useful for public data sets in other layouts (e.g. MovieLens) and for tests.
    """
    frames = {"interactions": interactions, "users": users, "items": items, "artwork": artwork}
    tables: dict[str, pa.Table] = {}
    digest = hashlib.sha256()
    for name, frame in frames.items():
        if frame is None:
            continue
        label = f"<{name}>"
        _check_header([str(c) for c in frame.columns], name, label)
        table = pa.Table.from_pandas(frame, preserve_index=False)
        tables[name] = _normalize_types(table, name, label)
        digest.update(name.encode())
        digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    labels = {name: f"<{name}>" for name in tables}
    done: Future[str] = Future()
    done.set_result(digest.hexdigest())
    return _validate(tables, labels, event_weights, done)


def build_matrix(
    dataset: Dataset,
    interactions: pd.DataFrame | None = None,
    user_ids: np.ndarray | None = None,
    item_ids: np.ndarray | None = None,
    *,
    kinds: bool = False,
) -> InteractionMatrix:
    """Fold ``interactions`` (default: all of the dataset's) into a matrix over the given id
    universes (default: users of the interactions; items of items file + interactions).
    Interactions whose user/item is outside the given universes are dropped. ``kinds``
    also records which kinds of event made each cell (``seen_by``: the bundle's seen rule).

    The default item universe is the whole catalog (items file + every item of the dataset's
    interactions), so matrices built from different splits share their item columns.
    Duplicate (user, item) pairs are summed; zero-weight cells are dropped.
    """
    frame = dataset.interactions if interactions is None else interactions
    u_codes, u_uniques = _codes(frame["user_id"])
    i_codes, i_uniques = _codes(frame["item_id"])
    # When a default universe is exactly the sorted categories, codes are positions already.
    if user_ids is None:
        user_ids = _observed_sorted(u_codes, u_uniques)
        same_users = len(user_ids) == len(u_uniques) and u_uniques.is_monotonic_increasing
    else:
        user_ids, same_users = _as_id_array(user_ids, "user_ids"), False
    if item_ids is None:
        item_ids = catalog_item_ids(dataset, extra=_observed_sorted(i_codes, i_uniques))
        own = dataset.interactions["item_id"].cat.categories
        same_items = i_uniques is own or (len(i_uniques) == len(own) and i_uniques.equals(own))
        same_items = same_items and len(item_ids) == len(own) and own.is_monotonic_increasing
    else:
        item_ids, same_items = _as_id_array(item_ids, "item_ids"), False
    rows = u_codes if same_users else _positions(u_uniques, user_ids, u_codes)
    cols = i_codes if same_items else _positions(i_uniques, item_ids, i_codes)
    keep = (rows >= 0) & (cols >= 0)
    weights = np.asarray(frame["weight"], dtype=np.float32)
    bits = kind_bits(frame) if kinds else None
    if not keep.all():
        rows, cols, weights = rows[keep], cols[keep], weights[keep]
        bits = bits[keep] if bits is not None else None
    shape = (len(user_ids), len(item_ids))
    matrix = sp.coo_matrix((weights, (rows, cols)), shape=shape, dtype=np.float32).tocsr()
    matrix.sum_duplicates()
    matrix.eliminate_zeros()
    seen_by = _cell_kinds(matrix, rows, cols, bits) if bits is not None else None
    return InteractionMatrix(user_ids=user_ids, item_ids=item_ids, matrix=matrix, seen_by=seen_by)


def kind_bits(frame: pd.DataFrame) -> np.ndarray:
    """[n] uint8: the seen-class bit of each interaction's event type (rows without one
    are plain interactions)."""
    if "event_type" not in frame:
        return np.full(len(frame), seen_class_bit(NO_EVENT_TYPE), dtype=np.uint8)
    column = frame["event_type"].astype("category")
    table = [seen_class_bit(str(name)) for name in column.cat.categories]
    lookup = np.asarray([*table, 0], dtype=np.uint8)  # code -1 (missing) -> no kind
    return lookup[np.asarray(column.cat.codes, dtype=np.int64)]  # type: ignore[no-any-return]


def _cell_kinds(
    matrix: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray, bits: np.ndarray
) -> np.ndarray:
    """[nnz] uint8 aligned with ``matrix.data``: the OR of the bits of every interaction
    folded into each cell (a cell whose events have no kind gets 0: it never hides).

    One presence matrix per kind (duplicates summed, then set to the kind's bit) summed
    over kinds is the OR; adding it, masked to ``matrix``'s cells, to a constant on those
    cells gives a matrix with exactly ``matrix``'s structure, so its data line up."""
    shape = matrix.shape
    structure = sp.csr_matrix(
        (np.ones(matrix.nnz, np.int32), matrix.indices, matrix.indptr), shape=shape
    )
    combined = sp.csr_matrix(shape, dtype=np.int32)
    for bit in np.unique(bits[bits > 0]).tolist():
        pick = bits == bit
        present = sp.coo_matrix(
            (np.ones(int(pick.sum()), np.int32), (rows[pick], cols[pick])), shape=shape
        ).tocsr()
        present.sum_duplicates()
        present.data[:] = bit
        combined = combined + present
    cells = structure * 256 + structure.multiply(combined).tocsr()
    cells.sort_indices()
    matrix.sort_indices()
    lined_up = np.array_equal(cells.indptr, matrix.indptr)
    if not (lined_up and np.array_equal(cells.indices, matrix.indices)):
        raise RuntimeError("cell kinds do not line up with the interaction matrix")
    return (cells.data - 256).astype(np.uint8)


def catalog_item_ids(dataset: Dataset, extra: np.ndarray | None = None) -> np.ndarray:
    """Sorted str ids of every known item: items file ∪ interactions (∪ ``extra``)."""
    parts = [np.asarray(dataset.interactions["item_id"].cat.categories, dtype=object)]
    if dataset.items is not None:
        parts.append(dataset.items["item_id"].to_numpy(dtype=object))
    if extra is not None and len(extra):
        parts.append(np.asarray(extra, dtype=object))
    return np.asarray(pd.Index(np.concatenate(parts)).unique().sort_values(), dtype=object)


def user_feature_columns(dataset: Dataset) -> list[str]:
    """Categorical user feature columns (``region`` first when present); [] without users."""
    if dataset.users is None:
        return []
    return [c for c in dataset.users.columns if c != "user_id"]


def item_feature_columns(dataset: Dataset) -> list[str]:
    """Categorical item feature columns (not ``item_id`` nor ``regions``); [] without items."""
    if dataset.items is None:
        return []
    return [c for c in dataset.items.columns if c not in ("item_id", "regions")]


def item_regions(dataset: Dataset) -> dict[str, tuple[str, ...]]:
    """item_id -> regions where it is available; ``()`` means everywhere.

    Items absent from the items file (or with no ``regions`` column) are available everywhere
    and are not listed.
    """
    items = dataset.items
    if items is None or "regions" not in items.columns:
        return {}
    restricted = items[items["regions"] != ""]
    return {
        item: tuple(r for r in regions.split(REGION_SEPARATOR) if r)
        for item, regions in zip(restricted["item_id"], restricted["regions"], strict=True)
    }


def resolve_event_weights(event_weights: Mapping[str, float] | None) -> dict[str, float]:
    """Defaults overridden/extended by ``event_weights``; negative or non-finite refused."""
    merged = dict(DEFAULT_EVENT_WEIGHTS)
    for name, value in (event_weights or {}).items():
        try:
            weight = float(value)
        except (TypeError, ValueError):
            raise DataValidationError(
                f"event weight for '{name}' is not a number: {value!r}"
            ) from None
        if not math.isfinite(weight) or weight < 0:
            raise DataValidationError(f"event weight for '{name}' must be >= 0, got {value!r}")
        if weight > MAX_WEIGHT:
            raise DataValidationError(
                f"event weight for '{name}' must be <= {MAX_WEIGHT:g}, got {value!r}"
            )
        merged[str(name)] = weight
    return merged


# --- locating and reading files -----------------------------------------------------------


def _locate(data_dir: Path, name: str) -> Path | None:
    found = [data_dir / f"{name}{ext}" for ext in FORMATS if (data_dir / f"{name}{ext}").is_file()]
    if len(found) > 1:
        raise DataValidationError(
            f"both {found[0].name} and {found[1].name} exist; keep exactly one of them",
            file=str(data_dir),
        )
    return found[0] if found else None


def _missing_interactions_message(data_dir: Path) -> str:
    present = sorted(p.name for p in data_dir.iterdir() if p.is_file())
    message = "missing interactions.csv or interactions.parquet (required)"
    close = difflib.get_close_matches("interactions.csv", present, n=1, cutoff=0.6)
    close += difflib.get_close_matches("interactions.parquet", present, n=1, cutoff=0.6)
    if close:
        message += f"; did you mean '{close[0]}'?"
    elif present:
        message += f"; found: {', '.join(present[:10])}"
    return message


def _read_table(path: Path, name: str) -> pa.Table:
    label = str(path)
    if path.stat().st_size == 0:
        raise DataValidationError("file is empty (no header, no rows)", file=label)
    if path.suffix == ".csv":
        _check_header(_csv_header(path), name, label)
        table = _read_csv(path, label)
    else:
        try:
            table = pq.read_table(path, read_dictionary=_dictionary_columns(path, name))
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataValidationError(f"cannot read Parquet: {exc}", file=label) from None
        _check_header(list(table.column_names), name, label)
    return _normalize_types(table, name, label)


def _dictionary_columns(path: Path, name: str) -> list[str]:
    """Interaction string columns to read as dictionary codes: 20M ids decode to int32
    indices plus ~1M distinct strings instead of 20M string objects (3x faster, less RAM)."""
    if name != "interactions":
        return []
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError):
        return []  # read_table reports it
    return [
        f.name
        for f in schema
        if f.name in DICTIONARY_COLUMNS
        and (pa.types.is_string(f.type) or pa.types.is_large_string(f.type))
    ]


def _csv_header(path: Path) -> list[str]:
    with path.open("rb") as handle:
        first = handle.readline()
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataValidationError(
            f"header is not UTF-8 text ({exc.reason} at byte {exc.start})", file=str(path), row=1
        ) from None
    header = next(csv.reader([text]), [])
    if not header or all(not h.strip() for h in header):
        raise DataValidationError("file is empty (no header)", file=str(path), row=1)
    return header


def _read_csv(path: Path, label: str) -> pa.Table:
    # Every column as a string: ids keep leading zeros ("007"); numbers are parsed (and
    # their bad rows located) by the validators below.
    convert = pacsv.ConvertOptions(
        default_column_type=pa.string(),
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    read = pacsv.ReadOptions(block_size=1 << 24)
    try:
        return pacsv.read_csv(path, read_options=read, convert_options=convert)
    except (pa.ArrowInvalid, OSError) as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        row = _bad_csv_row(path, text)
        raise DataValidationError(f"cannot parse CSV: {text}", file=label, row=row) from None


def _bad_csv_row(path: Path, message: str) -> int | None:
    """The file row behind a pyarrow CSV error (slow path, only once the read failed)."""
    if "UTF8" in message or "UTF-8" in message:
        with path.open("rb") as handle:
            for number, line in enumerate(handle, start=1):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError:
                    return number
        return None
    found: list[int] = []

    def first_bad(row: pacsv.InvalidRow) -> str:
        if row.number is not None:
            found.append(int(row.number))
        return "error"

    # Single-threaded so pyarrow knows each row's physical number.
    options = pacsv.ParseOptions(invalid_row_handler=first_bad)
    with contextlib.suppress(pa.ArrowInvalid, OSError):
        pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(use_threads=False),
            parse_options=options,
            convert_options=pacsv.ConvertOptions(default_column_type=pa.string()),
        )
    if found:
        return found[0]
    match = re.search(r"[Rr]ow #?(\d+)", message)
    return int(match.group(1)) if match else None


def _check_header(columns: Sequence[str], name: str, label: str) -> None:
    seen: set[str] = set()
    for column in columns:
        if column in seen:
            raise DataValidationError("duplicate column name", file=label, row=1, column=column)
        seen.add(column)
    known = REQUIRED_COLUMNS[name] + OPTIONAL_COLUMNS[name]
    for required in REQUIRED_COLUMNS[name]:
        if required not in seen:
            raise DataValidationError(
                f"missing required column{_suggest(required, columns)}; "
                f"columns found: {', '.join(columns)}",
                file=label,
                row=1,
                column=required,
            )
    # A near miss of a known column (e.g. 'wieght', items 'region') would otherwise be
    # ignored or become a feature silently.
    for column in columns:
        if column in known:
            continue
        close = difflib.get_close_matches(column, known, n=1, cutoff=0.75)
        if close and close[0] not in seen:
            raise DataValidationError(
                f"unknown column; did you mean '{close[0]}'?", file=label, row=1, column=column
            )


def _suggest(target: str, columns: Sequence[str]) -> str:
    close = difflib.get_close_matches(target, list(columns), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'? rename it to '{target}')" if close else ""


def _normalize_types(table: pa.Table, name: str, label: str) -> pa.Table:
    """Every column as string except numeric timestamp/weight (those are parsed later)."""
    numeric_ok = {"timestamp", "weight"} if name == "interactions" else set()
    columns = []
    for field, column in zip(table.schema, table.columns, strict=True):
        try:
            keep = name == "interactions" and field.name in DICTIONARY_COLUMNS
            if keep and _is_string_dictionary(field.type):
                columns.append(column)  # _encode takes its codes as they are
                continue
            if pa.types.is_dictionary(field.type):
                column = column.cast(field.type.value_type)
            if pa.types.is_large_string(column.type) or pa.types.is_string_view(column.type):
                column = column.cast(pa.string())
            if field.name not in numeric_ok and not pa.types.is_string(column.type):
                column = _to_string(column)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise DataValidationError(
                f"column has type {field.type}; expected text or numbers",
                file=label,
                column=field.name,
            ) from None
        columns.append(column)
    return pa.table(columns, names=table.column_names)


def _is_string_dictionary(kind: pa.DataType) -> bool:
    return pa.types.is_dictionary(kind) and pa.types.is_string(kind.value_type)


def _to_string(column: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_floating(column.type):
        # Integral floats (ids read through NaN-holding pandas columns) print without ".0".
        values = column.to_numpy(zero_copy_only=False)
        finite = np.isfinite(values)
        if finite.all() and np.array_equal(values, np.round(values)):
            return pa.chunked_array([pa.array(values.astype(np.int64)).cast(pa.string())])
    return column.cast(pa.string())


# --- validation ---------------------------------------------------------------------------


def _validate(
    tables: Mapping[str, pa.Table],
    labels: Mapping[str, str],
    event_weights: Mapping[str, float] | None,
    fingerprint: Future[str],
) -> Dataset:
    weights = resolve_event_weights(event_weights)
    for name, table in tables.items():
        if table.num_rows == 0:
            raise DataValidationError("file has a header but no data rows", file=labels[name])
    users = _entity_frame(tables, labels, "users")
    items = _entity_frame(tables, labels, "items")
    interactions = _interactions_frame(tables["interactions"], labels["interactions"], weights)
    if users is not None:
        _check_known(interactions["user_id"], users["user_id"], labels, "user_id", "users")
    if items is not None:
        _check_known(interactions["item_id"], items["item_id"], labels, "item_id", "items")
    artwork = _entity_frame(tables, labels, "artwork")
    if artwork is not None:
        _check_artwork_items(artwork, items, interactions, labels)
    return Dataset(
        interactions=interactions,
        users=users,
        items=items,
        artwork=artwork,
        fingerprint=fingerprint.result(),
        files=dict(labels),
    )


def _first_true(mask: pa.ChunkedArray | pa.Array | np.ndarray) -> int:
    """Index of the first True (nulls count as False), or -1."""
    if isinstance(mask, np.ndarray):
        hits = np.flatnonzero(mask)
        return int(hits[0]) if hits.size else -1
    return int(pc.index(pc.fill_null(mask, False), True).as_py())


def _refuse_first(
    mask: pa.ChunkedArray | pa.Array | np.ndarray,
    message: Callable[[int], str],
    *,
    file: str,
    column: str,
) -> None:
    """Refuse the first True row of ``mask`` (0-based data row; ``message`` gets it), if any."""
    row = _first_true(mask)
    if row >= 0:
        raise DataValidationError(message(row), file=file, row=row + FIRST_DATA_ROW, column=column)


def _check_ids(column: pa.ChunkedArray, label: str, column_name: str) -> None:
    empty = pc.or_kleene(pc.is_null(column), pc.equal(pc.utf8_length(column), 0))
    _refuse_first(empty, lambda _: "empty id", file=label, column=column_name)


def _entity_frame(
    tables: Mapping[str, pa.Table], labels: Mapping[str, str], name: str
) -> pd.DataFrame | None:
    table = tables.get(name)
    if table is None:
        return None
    label = labels[name]
    keys = KEY_COLUMNS[name]
    for key in keys:
        _check_ids(table.column(key), label, key)
    # Key columns first, then the optional known column, then features in file order.
    known = [c for c in keys + OPTIONAL_COLUMNS[name] if c in table.column_names]
    order = known + [c for c in table.column_names if c not in known]
    filled = pa.table({c: pc.fill_null(table.column(c), "") for c in order})
    frame = filled.to_pandas().astype("str")
    duplicated = frame.duplicated(list(keys), keep="first").to_numpy()
    row = _first_true(duplicated)
    if row >= 0:
        first = _first_true(_key_equal(frame, keys, row))
        what = " + ".join(keys)
        raise DataValidationError(
            f"duplicate {what} {_key_text(frame, keys, row)} "
            f"(first seen at row {first + FIRST_DATA_ROW})",
            file=label,
            row=row + FIRST_DATA_ROW,
            column=keys[-1],
        )
    if name == "items" and "regions" in frame.columns:
        check_region_lists(frame["regions"], label)
        frame["regions"] = _normalize_regions(frame["regions"])
    return frame


def _key_equal(frame: pd.DataFrame, keys: Sequence[str], row: int) -> np.ndarray:
    mask = np.ones(len(frame), dtype=bool)
    for key in keys:
        mask &= (frame[key] == frame[key].iat[row]).to_numpy()
    return mask


def _key_text(frame: pd.DataFrame, keys: Sequence[str], row: int) -> str:
    return " + ".join(repr(frame[key].iat[row]) for key in keys)


def check_region_lists(regions: pd.Series, label: str) -> None:
    """Refuse a ``regions`` value written with another list separator (``DE;FR``), naming
    the row: it would be one region nobody is in, so the item would never be served."""
    for sep in FOREIGN_REGION_SEPARATORS:
        bad = regions.str.contains(sep, regex=False).to_numpy()
        row = _first_true(bad)
        if row >= 0:
            value = str(regions.iat[row])
            raise DataValidationError(
                f"regions {value!r} contains {sep!r}; separate regions with "
                f"'{REGION_SEPARATOR}' (e.g. {value.replace(sep, REGION_SEPARATOR)!r})",
                file=label,
                row=row + FIRST_DATA_ROW,
                column="regions",
            )


def _normalize_regions(regions: pd.Series) -> pd.Series:
    # "US-9 | CA" and "US-9|CA|" mean the same availability; store the canonical form.
    if not regions.str.contains(r"\s|\|\||^\||\|$", regex=True).any():
        return regions
    cleaned = (
        regions.str.replace(r"\s*\|\s*", REGION_SEPARATOR, regex=True)
        .str.replace(r"\|{2,}", REGION_SEPARATOR, regex=True)
        .str.strip()
        .str.strip(REGION_SEPARATOR)
    )
    return cleaned.astype("str")


def _interactions_frame(table: pa.Table, label: str, weights: Mapping[str, float]) -> pd.DataFrame:
    # Columns are independent pyarrow work that releases the GIL: parse them in parallel.
    # Results are collected in column order, so the error reported is deterministic.
    columns = table.column_names
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="load") as pool:
        user_id = pool.submit(_id_categorical, table.column("user_id"), label, "user_id")
        item_id = pool.submit(_id_categorical, table.column("item_id"), label, "item_id")
        stamps = pool.submit(_parse_timestamps, table.column("timestamp"), label)
        events = (
            pool.submit(_event_weights, table.column("event_type"), label, weights)
            if "event_type" in columns
            else None
        )
        factors = (
            pool.submit(_parse_weights, table.column("weight"), label)
            if "weight" in columns
            else None
        )
        ids = {"user_id": user_id.result(), "item_id": item_id.result()}
        timestamps = stamps.result()
        parsed_events = events.result() if events is not None else None
        factor = factors.result() if factors is not None else None
    if parsed_events is not None:
        event_type, type_weight = parsed_events
    else:
        event_type = pd.Categorical.from_codes(
            np.zeros(table.num_rows, dtype=np.int8),
            categories=pd.Index([NO_EVENT_TYPE], dtype="str"),
        )
        type_weight = np.ones(table.num_rows, dtype=np.float32)
    weight = type_weight if factor is None else type_weight * factor
    return pd.DataFrame(
        {
            "user_id": ids["user_id"],
            "item_id": ids["item_id"],
            "timestamp": timestamps,
            "event_type": event_type,
            "weight": weight.astype(np.float32, copy=False),
        }
    )


def _id_categorical(column: pa.ChunkedArray, label: str, name: str) -> pd.Categorical:
    codes, dictionary = _encode(column)
    blank = int(pc.index(dictionary, "").as_py())
    empty = (codes < 0) | (codes == blank) if blank >= 0 else codes < 0
    _refuse_first(empty, lambda _: "empty id", file=label, column=name)
    return _sorted_categorical(codes, dictionary)


def _encode(column: pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """int32 dictionary codes (-1 for null) and the dictionary, without copying the strings."""
    if _is_string_dictionary(column.type):
        return _dictionary_codes(column)
    chunks = pc.dictionary_encode(column).chunks
    if not chunks:
        return np.empty(0, dtype=np.int32), pa.array([], type=column.type)
    dictionary = chunks[-1].dictionary
    # Arrow's encoder shares one memo table across chunks, so every chunk carries the final
    # dictionary; should a version not, encode one combined array instead.
    if not all(c.dictionary.equals(dictionary) for c in chunks[:-1]):
        chunks = [pc.dictionary_encode(column.combine_chunks())]
        dictionary = chunks[0].dictionary
    codes = np.concatenate(
        [c.indices.fill_null(-1).to_numpy().astype(np.int32, copy=False) for c in chunks]
    )
    return codes, dictionary


def _dictionary_codes(column: pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """Codes and dictionary of an already dictionary-typed column (Parquet read with
    ``read_dictionary``, pandas categoricals), equal to ``dictionary_encode`` of the plain
    strings up to code order. A Parquet row group's chunks share one dictionary, so only
    the distinct dictionaries (~20 at 20M rows, not 160 chunks) are merged by hashing."""
    chunks = list(column.chunks)
    slot: dict[tuple[int, int, int], int] = {}
    distinct: list[pa.Array] = []
    for chunk in chunks:
        key = _array_identity(chunk.dictionary)
        if key not in slot:
            slot[key] = len(distinct)
            distinct.append(chunk.dictionary)
    merged = pc.dictionary_encode(pa.concat_arrays(distinct)) if distinct else None
    if merged is None or len(merged.dictionary) == 0:
        return np.full(len(column), -1, dtype=np.int32), pa.array([], type=pa.string())
    global_codes = merged.indices.fill_null(-1).to_numpy().astype(np.int32, copy=False)
    bounds = np.cumsum([0] + [len(d) for d in distinct])
    # Per distinct dictionary: local code -> global code, with one extra -1 slot for nulls.
    transpose = [np.append(global_codes[a:b], np.int32(-1)) for a, b in itertools.pairwise(bounds)]
    codes = np.concatenate(
        [
            transpose[slot[_array_identity(c.dictionary)]][
                c.indices.fill_null(-1).to_numpy().astype(np.int64, copy=False)
            ]
            for c in chunks
        ]
    ).astype(np.int32, copy=False)
    dictionary = merged.dictionary
    used = np.bincount(codes[codes >= 0], minlength=len(dictionary)) > 0
    if not used.all():  # categoricals may carry categories no row uses
        remap = np.full(len(dictionary) + 1, -1, dtype=np.int32)
        remap[np.flatnonzero(used)] = np.arange(int(used.sum()), dtype=np.int32)
        codes = remap[codes]  # -1 indexes the last slot, which stays -1
        dictionary = dictionary.filter(pa.array(used))
    return codes, dictionary


def _array_identity(array: pa.Array) -> tuple[int, int, int]:
    """Same buffers, offset and length: the same values (chunks of one row group)."""
    offsets = array.buffers()[1]
    return (0 if offsets is None else offsets.address, array.offset, len(array))


def _sorted_categorical(codes: np.ndarray, dictionary: pa.Array) -> pd.Categorical:
    """Categorical whose categories are the sorted dictionary (codes remapped, -1 kept)."""
    order = pc.array_sort_indices(dictionary).to_numpy()
    rank = np.empty(order.size + 1, dtype=np.int32)
    rank[order] = np.arange(order.size, dtype=np.int32)
    rank[-1] = -1  # code -1 (missing) indexes the last slot
    categories = pd.Index(dictionary.take(pa.array(order)).to_numpy(zero_copy_only=False))
    return pd.Categorical.from_codes(
        rank[codes], categories=categories.astype("str"), validate=False
    )


def _parse_timestamps(column: pa.ChunkedArray, label: str) -> np.ndarray:
    kind = column.type
    if pa.types.is_string(kind):
        return _parse_timestamp_strings(column, label)
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        _refuse_nulls(column, label, "timestamp")
        seconds = column.cast(pa.timestamp("s", tz=getattr(kind, "tz", None)), safe=False)
        return seconds.cast(pa.int64()).to_numpy()
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        _refuse_nulls(column, label, "timestamp")
        return _epoch_seconds(column.to_numpy(), column, label)
    raise DataValidationError(
        f"timestamp has type {kind}; expected epoch seconds or ISO-8601",
        file=label,
        column="timestamp",
    )


def _parse_timestamp_strings(column: pa.ChunkedArray, label: str) -> np.ndarray:
    for number in (pa.int64(), pa.float64()):  # int parsing is exact and faster
        try:
            numeric = column.cast(number)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        return _epoch_seconds(numeric.to_numpy(), column, label)
    for unit in (pa.timestamp("s", tz="UTC"), pa.timestamp("s")):
        try:
            return column.cast(unit).cast(pa.int64()).to_numpy()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    text = pd.Series(column.to_numpy(zero_copy_only=False), dtype="str")
    parsed = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
    bad = parsed.isna().to_numpy()
    if bad.any():
        # The first row decides the format the file meant; report the first row off it.
        numeric = pd.to_numeric(text, errors="coerce").notna().to_numpy()
        expected = "epoch seconds" if numeric[0] else "ISO-8601 (e.g. 2026-01-01T00:00:00Z)"
        row = _first_true(~numeric if numeric[0] else bad)
        raise DataValidationError(
            f"cannot parse timestamp {text.iat[row]!r} as {expected} "
            "(epoch seconds or ISO-8601 are accepted; one format per file)",
            file=label,
            row=row + FIRST_DATA_ROW,
            column="timestamp",
        )
    return (parsed.astype("datetime64[s, UTC]").astype("int64")).to_numpy()


def _epoch_seconds(values: np.ndarray, original: pa.ChunkedArray, label: str) -> np.ndarray:
    if values.size == 0:
        return values.astype(np.int64)
    if values.dtype.kind in "iu":
        if max(abs(int(values.min())), abs(int(values.max()))) <= _MAX_EPOCH_SECONDS:
            return values.astype(np.int64, copy=False)
    elif float(np.max(np.abs(values))) <= _MAX_EPOCH_SECONDS:  # False for NaN too
        return np.floor(values).astype(np.int64)
    # Slow path: name the first offending row.
    values = values.astype(np.float64)
    bad = ~np.isfinite(values)
    _refuse_first(
        bad,
        lambda r: f"cannot parse timestamp {original[r].as_py()!r}",
        file=label,
        column="timestamp",
    )
    _refuse_first(
        np.abs(values) > _MAX_EPOCH_SECONDS,
        lambda r: (
            f"timestamp {original[r].as_py()!r} looks like epoch milliseconds; "
            "the contract wants epoch seconds"
        ),
        file=label,
        column="timestamp",
    )
    return np.floor(values).astype(np.int64)


def _refuse_nulls(column: pa.ChunkedArray, label: str, name: str) -> None:
    _refuse_first(pc.is_null(column), lambda _: f"missing {name} value", file=label, column=name)


def _parse_weights(column: pa.ChunkedArray, label: str) -> np.ndarray:
    if pa.types.is_string(column.type):
        try:
            values = column.cast(pa.float64()).to_numpy()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            text = pd.Series(column.to_numpy(zero_copy_only=False), dtype="str")
            parsed = pd.to_numeric(text, errors="coerce")
            row = _first_true(parsed.isna().to_numpy())
            raise DataValidationError(
                f"weight {text.iat[row]!r} is not a number",
                file=label,
                row=row + FIRST_DATA_ROW,
                column="weight",
            ) from None
    elif pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        _refuse_nulls(column, label, "weight")
        values = column.to_numpy().astype(np.float64, copy=False)
    else:
        raise DataValidationError(
            f"weight has type {column.type}; expected a number", file=label, column="weight"
        )
    _refuse_first(
        ~np.isfinite(values),
        lambda r: f"weight {column[r].as_py()!r} is not a finite number",
        file=label,
        column="weight",
    )
    _refuse_first(
        values < 0,
        lambda r: f"weight {column[r].as_py()!r} is negative; weights must be >= 0",
        file=label,
        column="weight",
    )
    _refuse_first(
        values > MAX_WEIGHT,
        lambda r: (
            f"weight {column[r].as_py()!r} is above {MAX_WEIGHT:g}; weights are "
            "relative confidences: rescale the column"
        ),
        file=label,
        column="weight",
    )
    return values.astype(np.float32)


def _event_weights(
    column: pa.ChunkedArray, label: str, weights: Mapping[str, float]
) -> tuple[pd.Categorical, np.ndarray]:
    if column.null_count and _is_string_dictionary(column.type):
        column = column.cast(column.type.value_type)  # fill_null wants plain strings
    categorical = _sorted_categorical(
        *_encode(pc.fill_null(column, "") if column.null_count else column)
    )
    categories = [str(c) for c in categorical.categories]
    unknown = [c for c in categories if c not in weights]
    if unknown:
        unknown_codes = [categories.index(c) for c in unknown]
        row = _first_true(np.isin(categorical.codes, unknown_codes))
        value = categories[categorical.codes[row]]
        known = ", ".join(sorted(weights))
        raise DataValidationError(
            f"unknown event_type {value!r}{_suggest_value(value, weights)}; known: {known} "
            "(configure a weight for it to accept it)",
            file=label,
            row=row + FIRST_DATA_ROW,
            column="event_type",
        )
    lookup = np.array([weights[c] for c in categories], dtype=np.float32)
    return categorical, lookup[categorical.codes]


def _suggest_value(value: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(value, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_known(
    column: pd.Series, known: pd.Series, labels: Mapping[str, str], key: str, source: str
) -> None:
    categories = column.cat.categories
    missing = np.flatnonzero(~_isin(categories, known))
    if missing.size == 0:
        return
    codes = column.cat.codes.to_numpy()
    row = _first_true(np.isin(codes, missing))
    value = categories[int(codes[row])]
    raise DataValidationError(
        unknown_id_message(key, value, labels[source], missing.size),
        file=labels["interactions"],
        row=row + FIRST_DATA_ROW,
        column=key,
    )


def unknown_id_message(key: str, value: str, source: str, count: int) -> str:
    """An interaction naming an id its users/items file lacks (local and Spark jobs)."""
    return f"{key} {value!r} is not in {source} ({count} unknown {key}s in all)"


def _isin(values: pd.Index | pd.Series, known: pd.Index | pd.Series) -> np.ndarray:
    # pandas' isin on pyarrow strings loops in Python; arrow's hash join is vectorized.
    mask = pc.is_in(_arrow_strings(values), value_set=_arrow_strings(known))
    return np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool)


def _arrow_strings(values: pd.Index | pd.Series) -> pa.Array | pa.ChunkedArray:
    try:  # pyarrow-backed str columns hand over their buffers without copying
        array = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        array = pa.array(np.asarray(values, dtype=object), type=pa.string())
    return array if pa.types.is_string(array.type) else array.cast(pa.string())


def _check_artwork_items(
    artwork: pd.DataFrame,
    items: pd.DataFrame | None,
    interactions: pd.DataFrame,
    labels: Mapping[str, str],
) -> None:
    if items is not None:
        known = pd.Index(items["item_id"])
        where = f"not in {labels['items']}"
    else:
        known = pd.Index(interactions["item_id"].cat.categories)
        where = f"never seen in {labels['interactions']} (and there is no items file)"
    _refuse_first(
        ~_isin(artwork["item_id"], known),
        lambda r: f"artwork for unknown item {artwork['item_id'].iat[r]!r}: {where}",
        file=labels["artwork"],
        column="item_id",
    )


# --- fingerprint --------------------------------------------------------------------------


def _fingerprint_files(paths: Mapping[str, Path | None], stop: threading.Event) -> str:
    """sha256 over contract name + bytes of each file, streamed; "" once ``stop`` is set."""
    digest = hashlib.sha256()
    for name in CONTRACT_FILES:
        path = paths.get(name)
        if path is None:
            continue
        digest.update(f"{name}{path.suffix}\0".encode())
        with path.open("rb") as handle:
            while block := handle.read(_HASH_BLOCK):
                if stop.is_set():
                    return ""
                digest.update(block)
    return digest.hexdigest()


# --- matrix helpers -----------------------------------------------------------------------


def _codes(column: pd.Series) -> tuple[np.ndarray, pd.Index]:
    if isinstance(column.dtype, pd.CategoricalDtype):
        return column.cat.codes.to_numpy().astype(np.int32), column.cat.categories
    codes, uniques = pd.factorize(column.astype("str"), sort=True)
    return codes.astype(np.int32), pd.Index(uniques)


def _observed_sorted(codes: np.ndarray, uniques: pd.Index) -> np.ndarray:
    present = np.bincount(codes[codes >= 0], minlength=len(uniques)) > 0
    observed = pd.Index(uniques[present])
    if not observed.is_monotonic_increasing:
        observed = observed.sort_values()
    return np.asarray(observed, dtype=object)


def _as_id_array(ids: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray([str(x) for x in ids] if not isinstance(ids, np.ndarray) else ids)
    array = array.astype(object) if array.dtype != object else array
    if not pd.Index(array).is_unique:
        raise ValueError(f"{name} holds duplicate ids")
    return array


def _positions(uniques: pd.Index, universe: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Position in ``universe`` of each row's id (-1 when absent), via the few uniques."""
    # Arrow's hash lookup on str buffers; pandas' get_indexer on object arrays is slower.
    found = pc.index_in(_arrow_strings(uniques), value_set=_arrow_strings(pd.Index(universe)))
    lookup = found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    rows = np.where(codes >= 0, lookup[np.maximum(codes, 0)], -1)
    return rows.astype(np.int32 if len(universe) < 2**31 else np.int64)
