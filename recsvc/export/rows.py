"""One batch of users' rows of a memory-mapped bundle, read with explicit reads.

Export ranks users a sub-batch at a time through the shared pipeline, which indexes the
bundle's per-user arrays by model row. Reading those rows through the memory map would
make whole page-cache folios resident (a fault maps up to hundreds of KiB around the row:
~2 MB per user for users in random order), so :class:`RowReader` copies just the rows of
the batch's users out of the files (:func:`recsvc.bundle.user_array_files`) with
``preadv`` (adjacent rows in one read) and gives the pipeline the model over a bundle
holding only those users, renumbered 0..n-1 (:func:`recsvc.bundle.with_users`,
:meth:`recsvc.pipeline.model.ServingModel.for_users`). Every other table is shared.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsvc.bundle import (
    SEEN_BY,
    USER_CSR,
    USER_DENSE,
    UserArrayFile,
    is_mapped,
    user_array_files,
    with_users,
)
from recsvc.pipeline.model import ServingModel
from recsvc.pipeline.users import UserInput


class _File:
    """An open per-user array file of the bundle."""

    def __init__(self, where: UserArrayFile) -> None:
        self.name = where.name
        self.offset = where.offset
        self.dtype = where.dtype
        self.itemsize = where.dtype.itemsize
        self.fd = os.open(where.path, os.O_RDONLY)

    def read(self, out: np.ndarray, first: int) -> None:
        """Fill ``out`` (contiguous) with the elements from ``first`` on."""
        view = out.data.cast("B")
        position, done = self.offset + first * self.itemsize, 0
        while done < len(view):
            n = os.preadv(self.fd, [view[done:]], position + done)
            if n <= 0:
                raise OSError(f"{self.name}: short read at byte {position + done}")
            done += n

    def close(self) -> None:
        os.close(self.fd)


def _runs(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions where a run of consecutive rows starts, run lengths) of sorted ``rows``."""
    starts = np.flatnonzero(np.diff(rows, prepend=rows[:1] - 2) != 1)
    lengths = np.diff(np.append(starts, len(rows)))
    return starts, lengths


class RowReader:
    """Builds per-batch models over the rows of a mapped bundle; close() when done."""

    def __init__(self, model: ServingModel) -> None:
        self.model = model
        self._files: dict[str, _File] = {}
        try:
            for where in user_array_files(model.bundle):
                self._files[where.name] = _File(where)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def applies(model: ServingModel) -> bool:
        """Only a mapped bundle needs it (a bundle in RAM is read in place)."""
        b = model.bundle
        return is_mapped(b.candidates.data) and is_mapped(b.user_factors) and b.path.is_dir()

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()

    def model_for(self, inputs: Sequence[UserInput]) -> ServingModel:
        """The model restricted to the known users among ``inputs`` (same answers)."""
        bundle = self.model.bundle
        found = (bundle.user_index.get(u.user_id, -1) for u in inputs)
        rows = np.unique(np.fromiter(found, np.int64, len(inputs)))
        rows = rows[rows >= 0]
        dense = {name: self._dense_rows(name, getattr(bundle, name), rows) for name in USER_DENSE}
        csr = {key: self._csr_rows(key, getattr(bundle, key), rows) for key in USER_CSR}
        seen_by = None
        if bundle.user_items_seen_by is not None:
            seen_by = self._cell_rows(SEEN_BY, bundle.user_items.indptr, rows)
        local = with_users(bundle, rows, dense, csr, seen_by)
        return self.model.for_users(local, rows)

    def _dense_rows(self, name: str, array: np.ndarray, rows: np.ndarray) -> np.ndarray:
        width = int(np.prod(array.shape[1:], dtype=np.int64))
        out = np.empty((len(rows), *array.shape[1:]), array.dtype)
        flat = out.reshape(len(rows), width)
        f = self._files[name]
        for start, length in zip(*_runs(rows), strict=True):
            f.read(flat[start : start + length], int(rows[start]) * width)
        return out

    def _cell_rows(self, name: str, indptr: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The cells of ``rows`` of the per-cell array ``name`` (a CSR's indices or data,
        or an array aligned with them) under the CSR's ``indptr``, rows one after another."""
        lengths = (indptr[rows + 1] - indptr[rows]).astype(np.int64)
        local_ptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        f = self._files[name]
        out = np.empty(int(local_ptr[-1]), f.dtype)
        for start, length in zip(*_runs(rows), strict=True):
            lo, hi = int(local_ptr[start]), int(local_ptr[start + length])
            if hi > lo:
                f.read(out[lo:hi], int(indptr[rows[start]]))
        return out

    def _csr_rows(self, key: str, matrix: Any, rows: np.ndarray) -> sp.csr_matrix:
        indptr = matrix.indptr
        lengths = (indptr[rows + 1] - indptr[rows]).astype(np.int64)
        local_ptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        indices, data = (self._cell_rows(f"{key}.{p}", indptr, rows) for p in ("indices", "data"))
        shape = (len(rows), matrix.shape[1])
        return sp.csr_matrix((data, indices, local_ptr), shape=shape, copy=False)
