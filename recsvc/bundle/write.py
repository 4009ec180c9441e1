"""Writing a bundle's files and manifest into a directory (see :mod:`.publish`)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsvc.bundle.checks import shape_problems
from recsvc.bundle.errors import BundleError
from recsvc.bundle.files import file_entry, fsync_file
from recsvc.bundle.format import (
    CSR_PARTS,
    INDEX_FILE,
    MANIFEST,
    SCHEMA_VERSION,
    SEEN_BY,
    Bundle,
)


def write_bundle(directory: Path, bundle: Bundle) -> dict[str, Any]:
    """Write ``bundle``'s arrays into the (empty or new) ``directory``; return the manifest.

    ``bundle.manifest`` carries the caller's content (params, metrics, stages…); this adds
    ``schema_version``, ``version``, ``counts``, ``arrays`` (shape/dtype per array) and
    ``files`` (size + sha256 per file). ``bundle.path``, ``user_index`` and ``item_index``
    are not written (they are derived on load). Files are fsynced.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _check_consistent(bundle, where=str(directory))
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bundle-sha256") as hasher:
        # Each written file is hashed (from the page cache) while the next one is written
        # and fsynced: hashlib and file I/O release the GIL.
        hashing: dict[str, Future[dict[str, Any]]] = {}
        arrays = _write_files(
            directory, bundle, lambda name: _hash_later(hasher, hashing, directory, name)
        )
        files = {name: entry.result() for name, entry in hashing.items()}
    manifest = dict(bundle.manifest)
    manifest.update(
        schema_version=SCHEMA_VERSION,
        version=bundle.version,
        counts={
            "users": len(bundle.user_ids),
            "items": len(bundle.item_ids),
            "regions": len(bundle.region_names),
            "factors": int(bundle.item_factors.shape[1]),
        },
        arrays=arrays,
        files=files,
    )
    _write_json(directory / MANIFEST, manifest, indent=2)
    return manifest


def _hash_later(
    pool: ThreadPoolExecutor,
    hashing: dict[str, Future[dict[str, Any]]],
    directory: Path,
    name: str,
) -> None:
    hashing[name] = pool.submit(file_entry, directory / name)


def _write_files(
    directory: Path, bundle: Bundle, written: Callable[[str], None]
) -> dict[str, dict[str, Any]]:
    """Every file of ``bundle`` but the manifest; ``written(name)`` after each (fsynced)
    file; returns the ``arrays`` section of the manifest."""
    arrays: dict[str, dict[str, Any]] = {}

    def record(name: str, **described: np.ndarray) -> None:
        written(name)
        for key, value in described.items():
            arrays[key] = {"shape": list(value.shape), "dtype": value.dtype.str}

    for name, ids in (
        ("user_ids.json", bundle.user_ids),
        ("item_ids.json", bundle.item_ids),
        ("region_names.json", bundle.region_names),
    ):
        _write_json(directory / name, [str(x) for x in ids])
        record(name)

    plain = {
        "user_factors": bundle.user_factors,
        "item_factors": bundle.item_factors,
        "popularity": bundle.popularity,
        "region_popularity": bundle.region_popularity,
        "available_everywhere": bundle.available_everywhere,
    }
    if bundle.item_gram is not None:
        plain["item_gram"] = bundle.item_gram
    if bundle.user_projection is not None:
        plain["user_projection"] = bundle.user_projection
    for key, value in plain.items():
        _save_npy(directory / f"{key}.npy", value)
        record(f"{key}.npy", **{key: value})

    for key, matrix in (
        ("user_items", bundle.user_items),
        ("item_availability", bundle.item_availability),
        ("candidates", bundle.candidates),
        ("region_candidates", bundle.region_candidates),
    ):
        for name in _save_csr(directory, key, matrix):
            written(name)
        arrays[key] = {"shape": list(matrix.shape), "dtype": matrix.dtype.str, "nnz": matrix.nnz}
    if bundle.user_items_seen_by is not None:
        # Aligned with user_items.data as written: _save_csr keeps a CSR's cell order.
        _save_npy(directory / f"{SEEN_BY}.npy", bundle.user_items_seen_by)
        record(f"{SEEN_BY}.npy", user_items_seen_by=bundle.user_items_seen_by)
        arrays["user_items_seen_by"]["classes"] = list(bundle.user_items_seen_classes)

    for key, columns in (
        ("item_features", bundle.item_features),
        ("user_features", bundle.user_features),
    ):
        _save_npz(directory / f"{key}.npz", {c: _as_str(v) for c, v in columns.items()})
        record(f"{key}.npz")
        arrays[key] = {"columns": sorted(columns)}

    if bundle.hybrid is not None:
        h = bundle.hybrid
        _save_npz(
            directory / "hybrid.npz",
            {
                "user_feature_names": _as_str(h.user_feature_names),
                "user_feature_embeddings": h.user_feature_embeddings,
                "user_feature_biases": h.user_feature_biases,
                "item_representations": h.item_representations,
                "item_biases": h.item_biases,
            },
        )
        record("hybrid.npz", hybrid_item_representations=h.item_representations)
    if bundle.cold_start is not None:
        c = bundle.cold_start
        counts = sp.csr_matrix(c.group_counts, dtype=np.float32)
        _save_npz(
            directory / "cold_start.npz",
            {
                "source": np.array([c.source]),
                "prior_strength": np.array([c.prior_strength], dtype=np.float64),
                "groupings": np.array(["|".join(g) for g in c.groupings], dtype=str),
                "group_keys": _as_str(c.group_keys),
                "group_counts.indptr": counts.indptr.astype(np.int64),
                "group_counts.indices": counts.indices.astype(np.int32),
                "group_counts.data": counts.data,
                "group_counts.shape": np.array(counts.shape, dtype=np.int64),
                "feature_names": _as_str(c.feature_names),
                "feature_weights": np.asarray(c.feature_weights, dtype=np.float32),
                "intercept": np.asarray(c.intercept, dtype=np.float32),
            },
        )
        record("cold_start.npz")
    if bundle.artwork is not None:
        a = bundle.artwork
        payload = {"indptr": a.indptr, "variant_ids": _as_str(a.variant_ids)}
        payload.update({f"attr:{k}": _as_str(v) for k, v in a.attributes.items()})
        _save_npz(directory / "artwork.npz", payload)
        record("artwork.npz", artwork_variant_ids=a.variant_ids)

    _write_index(directory / INDEX_FILE, bundle.index)
    written(INDEX_FILE)
    return arrays


def _check_consistent(bundle: Bundle, where: str) -> None:
    """Refuse to write what load_bundle would refuse to read."""
    problems = shape_problems(bundle)
    if problems:
        raise BundleError(f"{where}: inconsistent bundle: {problems[0]}")


def _as_str(values: np.ndarray) -> np.ndarray:
    """Fixed-width unicode: loads without pickle (object arrays would need it)."""
    arr = np.asarray(values)
    if arr.dtype.kind == "U":
        return arr
    return (
        np.asarray([str(x) for x in arr.tolist()], dtype=np.str_) if arr.size else arr.astype("U1")
    )


def _write_json(path: Path, payload: Any, indent: int | None = None) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=indent, sort_keys=indent is not None, default=_json_default)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _save_npy(path: Path, value: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.save(fh, np.ascontiguousarray(value), allow_pickle=False)
        fh.flush()
        os.fsync(fh.fileno())


def _save_npz(path: Path, payload: Mapping[str, np.ndarray]) -> None:
    for key, value in payload.items():
        if np.asarray(value).dtype.kind == "O":
            raise BundleError(f"{path.name}: array '{key}' has object dtype (would need pickle)")
    with open(path, "wb") as fh:
        np.savez(fh, allow_pickle=False, **payload)
        fh.flush()
        os.fsync(fh.fileno())


def _save_csr(directory: Path, key: str, matrix: sp.spmatrix | sp.sparray) -> list[str]:
    """Write the three CSR arrays as ``<key>.<part>.npy``; returns the file names."""
    csr = sp.csr_matrix(matrix)
    parts = {
        "indptr": csr.indptr.astype(np.int64, copy=False),
        "indices": csr.indices.astype(np.int32, copy=False),
        "data": csr.data,
    }
    for part, value in parts.items():
        _save_npy(directory / f"{key}.{part}.npy", value)
    return [f"{key}.{part}.npy" for part in CSR_PARTS]


def _write_index(path: Path, index: Any) -> None:
    import faiss

    faiss.write_index(index, str(path))
    fsync_file(path)
