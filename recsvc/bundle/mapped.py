"""Memory-mapped ``.npy`` access for batch jobs, and dropping the pages they touched."""

from __future__ import annotations

import mmap
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from recsvc.bundle.errors import BundleError
from recsvc.bundle.format import SEEN_BY, Bundle


def _npy_header(fh: Any) -> tuple[tuple[int, ...], bool, np.dtype[Any], int]:
    """(shape, fortran order, dtype, data offset) of the ``.npy`` file open in ``fh``."""
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    else:
        raise ValueError(f"unsupported .npy format version {version}")
    if dtype.hasobject:
        raise ValueError("object arrays would need pickle")
    return shape, fortran, dtype, fh.tell()


def npy_data_offset(path: Path) -> int:
    """Byte offset of the array data in a ``.npy`` file (for explicit reads of its rows)."""
    try:
        with open(path, "rb") as fh:
            return _npy_header(fh)[3]
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path}: unreadable array: {exc}") from None


def map_npy(path: Path) -> np.ndarray:
    """A read-only memory map of a ``.npy`` file (header parsed by numpy; no pickle)."""
    try:
        with open(path, "rb") as fh:
            shape, fortran, dtype, offset = _npy_header(fh)
            nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if offset + nbytes > os.fstat(fh.fileno()).st_size:
                raise ValueError("file is shorter than its header says")
            if nbytes == 0:
                return np.empty(shape, dtype)
            buffer = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path}: unreadable array: {exc}") from None
    return np.ndarray(shape, dtype, buffer=buffer, offset=offset, order="F" if fortran else "C")


def release_pages(*arrays: np.ndarray) -> None:
    """Drop this process's resident pages of the memory-mapped ``arrays`` (no-op for
    arrays in RAM). The file stays in the page cache: the next access maps a page again
    with a minor fault, and the dropped pages stop counting in RSS."""
    done: set[int] = set()
    for array in arrays:
        base = _mapped_buffer(array)
        if base is not None and id(base) not in done and not base.closed:
            done.add(id(base))
            base.madvise(mmap.MADV_DONTNEED)


def is_mapped(array: np.ndarray) -> bool:
    """Whether ``array`` is a view of a memory map (``load_bundle(map_user_arrays=True)``)."""
    return _mapped_buffer(array) is not None


def _mapped_buffer(array: np.ndarray) -> mmap.mmap | None:
    """The memory map under ``array``'s chain of views, or None for an array in RAM."""
    base: Any = array
    while isinstance(base, np.ndarray):
        base = base.base
    return base if isinstance(base, mmap.mmap) else None


# The bundle's arrays that grow with the number of users: ``load_bundle(map_user_arrays=True)``
# maps them (a CSR's indptr stays in RAM: every row lookup reads it), batch jobs read them
# a chunk of users at a time.
USER_DENSE = ("user_factors",)
USER_CSR = ("user_items", "candidates")


@dataclass(frozen=True)
class UserArrayFile:
    """The ``.npy`` file behind one per-user array: element ``i`` is at byte
    ``offset + i * dtype.itemsize``."""

    name: str  # "user_factors", "user_items.indices", ...
    path: Path
    offset: int
    dtype: np.dtype[Any]


def user_arrays(bundle: Bundle) -> dict[str, np.ndarray]:
    """Every per-user array by name (``user_factors``, ``<csr>.indices``, ``<csr>.data``)."""
    out = {name: getattr(bundle, name) for name in USER_DENSE}
    for key in USER_CSR:
        matrix = getattr(bundle, key)
        out[f"{key}.indices"], out[f"{key}.data"] = matrix.indices, matrix.data
    if bundle.user_items_seen_by is not None:  # one value per cell of user_items
        out[SEEN_BY] = bundle.user_items_seen_by
    return out


def user_array_files(bundle: Bundle) -> list[UserArrayFile]:
    """Where each of :func:`user_arrays` lies in ``bundle``'s directory (for explicit reads
    of some users' rows instead of faulting them in through the map)."""
    out = []
    for name, array in user_arrays(bundle).items():
        path = bundle.path / f"{name}.npy"
        out.append(UserArrayFile(name, path, npy_data_offset(path), array.dtype))
    return out


def with_users(
    bundle: Bundle,
    rows: np.ndarray,
    dense: Mapping[str, np.ndarray],
    csr: Mapping[str, Any],
    seen_by: np.ndarray | None = None,
) -> Bundle:
    """``bundle`` holding only the users at ``rows`` (sorted, renumbered ``0..n-1``): their
    rows of every per-user array, read by the caller (``dense``: :data:`USER_DENSE`,
    ``csr``: :data:`USER_CSR` matrices, ``seen_by``: the cells of their ``user_items`` rows
    when the bundle has :data:`~recsvc.bundle.format.SEEN_BY`), and their ids and features."""
    if (seen_by is None) != (bundle.user_items_seen_by is None):
        raise ValueError("seen_by must be given exactly when the bundle has user_items_seen_by")
    ids = bundle.user_ids[rows]
    arrays: dict[str, Any] = {name: dense[name] for name in USER_DENSE}
    arrays.update({key: csr[key] for key in USER_CSR})
    arrays["user_items_seen_by"] = seen_by
    return replace(
        bundle,
        user_ids=ids,
        user_index={uid: i for i, uid in enumerate(ids.tolist())},
        user_features={c: v[rows] for c, v in bundle.user_features.items()},
        **arrays,
    )


def release_mapped_pages(bundle: Bundle) -> None:
    """:func:`release_pages` of every array ``load_bundle(map_user_arrays=True)`` maps."""
    release_pages(*user_arrays(bundle).values())


RANGE_BLOCK = 1 << 24  # values per block of value_range (64 MiB of int32)


def value_range(values: np.ndarray) -> tuple[int, int]:
    """(min, max) block by block, dropping mapped pages after each block: a whole-array
    ``min()`` would make every page of a memory-mapped file resident at once."""
    low, high = int(values[0]), int(values[0])
    for start in range(0, len(values), RANGE_BLOCK):
        block = values[start : start + RANGE_BLOCK]
        low, high = min(low, int(block.min())), max(high, int(block.max()))
        release_pages(block)
    return low, high
