"""One batch of users' rows of a memory-mapped bundle, read with explicit reads.

Export ranks users a sub-batch at a time through the shared pipeline, which indexes the
bundle's per-user arrays (``user_factors``, ``user_items``, ``candidates``) by model row.
Reading those rows through the memory map would make whole page-cache folios resident
(a fault maps up to hundreds of KiB around the row: ~2 MB per user for users in random
order), so :class:`RowReader` copies just the rows of the batch's users out of the files
with ``preadv`` (adjacent rows in one read) and gives the pipeline a view of the model
whose bundle holds only those users, renumbered 0..n-1. Every other table is shared.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsvc.bundle import Bundle, is_mapped, npy_data_offset
from recsvc.pipeline.model import ServingModel
from recsvc.pipeline.users import UserInput


class _File:
    """An open ``.npy`` file of the bundle: element ``i`` starts at ``offset + i * size``."""

    def __init__(self, bundle: Bundle, name: str, array: np.ndarray) -> None:
        path = bundle.path / name
        self.name = name
        self.offset = npy_data_offset(path)
        self.dtype = array.dtype
        self.fd = os.open(path, os.O_RDONLY)

    def read(self, out: np.ndarray, first: int) -> None:
        """Fill ``out`` (contiguous) with the elements from ``first`` on."""
        view = out.data.cast("B")
        position, done = self.offset + first * self.dtype.itemsize, 0
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


def _per_user_tables(model: ServingModel, rows: np.ndarray) -> dict[str, Any]:
    """The model's own tables indexed by user row, restricted to ``rows`` (renumbered).

    Every per-user table build_model derives must be listed here, or the batch model
    would read another user's entry: the export tests compare a mapped export with one
    from a bundle loaded whole, for scattered users, so a missing one fails there.
    """
    picked = rows.tolist()
    return {
        "user_regions": model.user_regions[rows],
        # per column: (name, [U] code, names)
        "user_feature_codes": [
            (column, [per_user[r] for r in picked], names)
            for column, per_user, names in model.user_feature_codes
        ],
    }


class RowReader:
    """Builds per-batch models over the rows of a mapped bundle; close() when done."""

    def __init__(self, model: ServingModel) -> None:
        bundle = model.bundle
        self.model = model
        self._files: dict[str, _File] = {}
        try:
            self._files["user_factors"] = _File(bundle, "user_factors.npy", bundle.user_factors)
            for key in ("user_items", "candidates"):
                matrix = getattr(bundle, key)
                for part in ("indices", "data"):
                    name = f"{key}.{part}"
                    self._files[name] = _File(bundle, f"{name}.npy", getattr(matrix, part))
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
        model, bundle = self.model, self.model.bundle
        found = (bundle.user_index.get(u.user_id, -1) for u in inputs)
        rows = np.unique(np.fromiter(found, np.int64, len(inputs)))
        rows = rows[rows >= 0]
        ids = bundle.user_ids[rows]
        local = replace(
            bundle,
            user_ids=ids,
            user_index={uid: i for i, uid in enumerate(ids.tolist())},
            user_factors=self._dense_rows("user_factors", bundle.user_factors, rows),
            user_items=self._csr_rows("user_items", bundle.user_items, rows),
            candidates=self._csr_rows("candidates", bundle.candidates, rows),
            user_features={c: v[rows] for c, v in bundle.user_features.items()},
        )
        return replace(model, bundle=local, **_per_user_tables(model, rows))

    def _dense_rows(self, name: str, array: np.ndarray, rows: np.ndarray) -> np.ndarray:
        width = int(np.prod(array.shape[1:], dtype=np.int64))
        out = np.empty((len(rows), *array.shape[1:]), array.dtype)
        flat = out.reshape(len(rows), width)
        f = self._files[name]
        for start, length in zip(*_runs(rows), strict=True):
            f.read(flat[start : start + length], int(rows[start]) * width)
        return out

    def _csr_rows(self, key: str, matrix: Any, rows: np.ndarray) -> sp.csr_matrix:
        indptr = matrix.indptr
        lengths = (indptr[rows + 1] - indptr[rows]).astype(np.int64)
        local_ptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        parts = {}
        for part in ("indices", "data"):
            out = np.empty(int(local_ptr[-1]), getattr(matrix, part).dtype)
            f = self._files[f"{key}.{part}"]
            for start, length in zip(*_runs(rows), strict=True):
                lo, hi = int(local_ptr[start]), int(local_ptr[start + length])
                if hi > lo:
                    f.read(out[lo:hi], int(indptr[rows[start]]))
            parts[part] = out
        shape = (len(rows), matrix.shape[1])
        return sp.csr_matrix((parts["data"], parts["indices"], local_ptr), shape=shape, copy=False)
