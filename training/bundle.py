"""Artifact bundle: the versioned directory the offline job publishes and servers load.

Layout (DESIGN.md, "Artifact bundle"): ``<root>/<version>/`` holding ``manifest.json``,
plain arrays (``.npy``/``.npz``, loaded with ``allow_pickle=False``), id maps and the FAISS
index; ``<root>/current`` points at the live version. No pickle anywhere.

THIS MODULE'S PUBLIC SHAPE IS SHARED BY training (writer) AND recsvc (reader): extend the
dataclasses, do not rename fields.

Files of one version (every one listed in ``manifest["files"]`` with its size and sha256):

==========================  ======================================================
``manifest.json``           schema version, params, metrics, files, array shapes
``user_ids.json``           [U] str, row order of every per-user array
``item_ids.json``           [I] str, row order of every per-item array
``region_names.json``       [R] str
``user_factors.npy``        [U, d] float32
``item_factors.npy``        [I, d] float32
``item_gram.npy``           [d, d] float64 ``item_factors.T @ item_factors`` (ALS fold-in)
``user_projection.npy``     [I, d] float32 linear fold-in: user vector = x_u @ P (optional)
``item_index.faiss``        FAISS index over item_factors (inner product)
``user_items.*.npy``        CSR [U, I] float32 folded interaction weights (seen items)
``popularity.npy``          [I] float32
``region_popularity.npy``   [R, I] float32
``item_availability.*.npy`` CSR [I, R] bool
``available_everywhere.npy``  [I] bool
``item_features.npz``       column -> [I] str
``user_features.npz``       column -> [U] str
``candidates.*.npy``        CSR [U, I] float32; each row's items in descending score order
``region_candidates.*.npy`` CSR [R, I] float32; same order rule
``hybrid.npz``              :class:`HybridArrays` (optional)
``artwork.npz``             :class:`ArtworkCatalog` (optional)
==========================  ======================================================

A CSR matrix ``X`` is three plain files ``X.indptr.npy`` (int64), ``X.indices.npy`` (int32)
and ``X.data.npy`` (shape in ``manifest["arrays"]``): plain ``.npy`` loads several times faster
than a zip member and can be memory-mapped. Candidate rows keep *score order*, not column
order: never call ``sort_indices()`` on them.

Publishing (:func:`publish`) is atomic: a version is built in ``<root>/.tmp-<version>-<pid>``
(a dot name: :func:`list_versions` and loaders ignore it), every file and the directory are
fsynced, the directory is renamed to ``<root>/<version>``, and ``current`` — a *relative*
symlink to the version name — is replaced with ``os.replace`` of a freshly made temp link
(rename(2) is atomic, so a reader sees either the old or the new target, never neither). A
crash at any point leaves ``current`` and earlier versions as they were; the leftover temp
directory is removed by the next publish.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import mmap
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from training.errors import BundleError

SCHEMA_VERSION = 1

CURRENT = "current"
MANIFEST = "manifest.json"
INDEX_FILE = "item_index.faiss"
CSR_KEYS = ("user_items", "item_availability", "candidates", "region_candidates")
TMP_PREFIX = ".tmp-"
_LOCK = ".publish.lock"
_VERSION_RE = re.compile(r"^\d{8}T\d{6}\d{6}Z-[0-9a-z]{8}$")


@dataclass(frozen=True)
class HybridArrays:
    """LightFM hybrid model as plain arrays, enough to score a cold-start user in numpy.

    A user's representation is the sum of the embeddings (and biases) of the features it
    has, each feature named ``"column=value"`` (e.g. ``"region=US-9"``), normalized the
    way the model was trained (see ``training.models.hybrid.cold_user_vector``).
    """

    user_feature_names: np.ndarray  # [F] str
    user_feature_embeddings: np.ndarray  # [F, d] float32
    user_feature_biases: np.ndarray  # [F] float32
    item_representations: np.ndarray  # [I, d] float32, aligned with Bundle.item_ids
    item_biases: np.ndarray  # [I] float32


@dataclass(frozen=True)
class ArtworkCatalog:
    """Artwork variants per item in CSR layout, aligned with Bundle.item_ids.

    Variants of item i are ``variant_ids[indptr[i]:indptr[i+1]]``; the first is the default.
    ``attributes`` maps an attribute column (e.g. ``theme``) to a [V] str array.
    """

    indptr: np.ndarray  # [I+1] int64
    variant_ids: np.ndarray  # [V] str
    attributes: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class Bundle:
    """A loaded, validated bundle. Immutable: a hot swap replaces the whole object."""

    path: Path
    version: str
    manifest: dict[str, Any]
    user_ids: np.ndarray  # [U] str, row order of user_factors
    item_ids: np.ndarray  # [I] str, row order of item_factors
    user_index: dict[str, int]
    item_index: dict[str, int]
    user_factors: np.ndarray  # [U, d] float32 (shipped CF model)
    item_factors: np.ndarray  # [I, d] float32
    index: Any  # faiss.Index over item_factors, inner product
    user_items: sp.csr_matrix  # [U, I] float32 training interactions (seen items)
    popularity: np.ndarray  # [I] float32 global popularity score
    region_names: np.ndarray  # [R] str
    region_popularity: np.ndarray  # [R, I] float32, shrunk toward global
    item_availability: sp.csr_matrix  # [I, R] bool: item available in region; see below
    available_everywhere: np.ndarray  # [I] bool: no `regions` restriction
    item_features: dict[str, np.ndarray]  # column -> [I] str (e.g. "category")
    user_features: dict[str, np.ndarray]  # column -> [U] str for known users (incl. region)
    candidates: sp.csr_matrix  # [U, I]-shaped; row u holds its top-C item scores (precomputed)
    region_candidates: sp.csr_matrix  # [R, I]-shaped top-C per region (cold start)
    hybrid: HybridArrays | None
    artwork: ArtworkCatalog | None
    # Extensions (defaults keep older constructors valid).
    # item_factors.T @ item_factors in float64: the Gram matrix ALS fold-in of a user's recent
    # events needs (x_u = (YtY + Y_u^T (C_u - I) Y_u + reg*I)^-1 Y_u^T C_u p_u); the
    # regularization and alpha are in manifest["model"]["fold_in"].
    item_gram: np.ndarray | None = None
    # Linear models (low-rank EASE): a user's vector is x_u @ user_projection with x_u the
    # binary row of seen items, so folding in a new item adds its row of P.
    user_projection: np.ndarray | None = None

    @property
    def region_index(self) -> dict[str, int]:
        """Region name -> row of region_popularity / region_candidates."""
        return {str(name): i for i, name in enumerate(self.region_names)}

    def user_candidates(self, user_idx: int) -> tuple[np.ndarray, np.ndarray]:
        """(item indices, scores) precomputed for a known user, best first."""
        return _csr_row(self.candidates, user_idx)

    def cold_candidates(self, region_idx: int) -> tuple[np.ndarray, np.ndarray]:
        """(item indices, scores) precomputed for a user known only by region, best first."""
        return _csr_row(self.region_candidates, region_idx)


def _csr_row(matrix: sp.csr_matrix, row: int) -> tuple[np.ndarray, np.ndarray]:
    start, stop = matrix.indptr[row], matrix.indptr[row + 1]
    return matrix.indices[start:stop], matrix.data[start:stop]


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------


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
    hashing[name] = pool.submit(_file_entry, directory / name)


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
    problems = _shape_problems(bundle)
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


def fsync_file(path: Path) -> None:
    """Flush a written file to disk (atomic publish: fsync before rename)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Flush a directory entry (a rename inside it) to disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


CSR_PARTS = ("indptr", "indices", "data")


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


def _file_entry(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": sha256_file(path)}


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------
# Loading and validation
# --------------------------------------------------------------------------------------


def load_bundle(
    path: Path, *, verify_checksums: bool = True, map_user_arrays: bool = False
) -> Bundle:
    """Load and validate a bundle: a version directory, or a root (follows ``current``).

    Checks the schema version, the size and sha256 of every file the manifest lists
    (streamed, a few MiB at a time), and that shapes and dtypes agree with each other and
    with the manifest. Anything wrong raises :class:`BundleError` naming the file; nothing
    is unpickled.

    ``map_user_arrays`` (export, audience; serving keeps everything in RAM): the arrays
    that grow with the number of users (``user_factors``, and the indices and data of
    ``user_items`` and ``candidates``) are read-only memory maps instead of copies, and
    validated block by block. Pages a caller touches count in its RSS until
    :func:`release_mapped_pages` drops them, so a batch job reading a chunk of rows at a
    time stays bounded by its chunk, not by the bundle.
    """
    directory = _bundle_dir(Path(path))
    manifest = _read_manifest(directory)
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise BundleError(f"{directory / MANIFEST}: no 'files' table")
    for name, entry in files.items():
        _verify_file(directory, name, entry, verify_checksums)
    required = [
        "user_ids.json",
        "item_ids.json",
        "region_names.json",
        "user_factors.npy",
        "item_factors.npy",
        "popularity.npy",
        "region_popularity.npy",
        "available_everywhere.npy",
        *(f"{key}.{part}.npy" for key in CSR_KEYS for part in CSR_PARTS),
        "item_features.npz",
        "user_features.npz",
        INDEX_FILE,
    ]
    for name in required:
        if name not in files:
            raise BundleError(f"{directory / name}: required file not listed in manifest")

    user_ids = _load_ids(directory / "user_ids.json")
    item_ids = _load_ids(directory / "item_ids.json")
    region_names = _load_ids(directory / "region_names.json")
    per_user = _map_npy if map_user_arrays else _load_npy
    bundle = Bundle(
        path=directory,
        version=str(manifest.get("version") or directory.name),
        manifest=manifest,
        user_ids=user_ids,
        item_ids=item_ids,
        user_index=_index_of(user_ids, directory / "user_ids.json"),
        item_index=_index_of(item_ids, directory / "item_ids.json"),
        user_factors=per_user(directory / "user_factors.npy"),
        item_factors=_load_npy(directory / "item_factors.npy"),
        index=_read_index(directory / INDEX_FILE),
        user_items=_load_csr(directory, "user_items", manifest, mapped=map_user_arrays),
        popularity=_load_npy(directory / "popularity.npy"),
        region_names=region_names,
        region_popularity=_load_npy(directory / "region_popularity.npy"),
        item_availability=_load_csr(directory, "item_availability", manifest),
        available_everywhere=_load_npy(directory / "available_everywhere.npy"),
        item_features=_load_npz(directory / "item_features.npz"),
        user_features=_load_npz(directory / "user_features.npz"),
        candidates=_load_csr(directory, "candidates", manifest, mapped=map_user_arrays),
        region_candidates=_load_csr(directory, "region_candidates", manifest),
        hybrid=_load_hybrid(directory / "hybrid.npz") if "hybrid.npz" in files else None,
        artwork=_load_artwork(directory / "artwork.npz") if "artwork.npz" in files else None,
        item_gram=_load_npy(directory / "item_gram.npy") if "item_gram.npy" in files else None,
        user_projection=(
            _load_npy(directory / "user_projection.npy") if "user_projection.npy" in files else None
        ),
    )
    problems = _shape_problems(bundle)
    problems += _manifest_problems(bundle, manifest)
    if problems:
        raise BundleError(f"{directory}: {problems[0]}")
    ef = manifest.get("index", {}).get("ef_search")
    if ef:
        _set_ef_search(bundle.index, int(ef))
    return bundle


def _bundle_dir(path: Path) -> Path:
    if (path / CURRENT).exists() or (path / CURRENT).is_symlink():
        return resolve_current(path)
    if not path.is_dir():
        raise BundleError(f"{path}: no such bundle directory")
    return path


def _read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{path}: missing (not a bundle directory?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: unreadable manifest: {exc}") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{path}: manifest is not a JSON object")
    schema = manifest.get("schema_version")
    if schema != SCHEMA_VERSION:
        raise BundleError(
            f"{path}: schema_version {schema!r} is not supported (this build reads "
            f"{SCHEMA_VERSION}); retrain with this version of recsvc"
        )
    return manifest


def _verify_file(directory: Path, name: str, entry: Any, verify_checksums: bool) -> None:
    path = directory / name
    if "/" in name or name.startswith(".") or not isinstance(entry, dict):
        raise BundleError(f"{directory / MANIFEST}: bad file entry {name!r}")
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise BundleError(f"{path}: missing") from None
    if size != entry.get("bytes"):
        raise BundleError(f"{path}: {size} bytes, manifest says {entry.get('bytes')} (truncated?)")
    if verify_checksums and sha256_file(path) != entry.get("sha256"):
        raise BundleError(f"{path}: sha256 mismatch (corrupt file)")


def _load_ids(path: Path) -> np.ndarray:
    try:
        ids = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: unreadable id list: {exc}") from None
    if not isinstance(ids, list) or not all(isinstance(x, str) for x in ids):
        raise BundleError(f"{path}: expected a JSON list of strings")
    return np.asarray(ids, dtype=np.str_) if ids else np.empty(0, dtype="U1")


def _index_of(ids: np.ndarray, path: Path) -> dict[str, int]:
    index = {str(x): i for i, x in enumerate(ids.tolist())}
    if len(index) != len(ids):
        raise BundleError(f"{path}: duplicate ids")
    return index


def _load_npy(path: Path) -> np.ndarray:
    try:
        value = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path}: unreadable array: {exc}") from None
    if not isinstance(value, np.ndarray):
        raise BundleError(f"{path}: not a .npy array")
    return value


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (OSError, ValueError, KeyError) as exc:
        raise BundleError(f"{path}: unreadable archive: {exc}") from None
    except Exception as exc:  # zipfile.BadZipFile and friends
        raise BundleError(f"{path}: unreadable archive: {exc}") from None


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


def _map_npy(path: Path) -> np.ndarray:
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


def release_mapped_pages(bundle: Bundle) -> None:
    """:func:`release_pages` of every array ``load_bundle(map_user_arrays=True)`` maps."""
    release_pages(
        bundle.user_factors,
        bundle.user_items.indices,
        bundle.user_items.data,
        bundle.candidates.indices,
        bundle.candidates.data,
    )


_RANGE_BLOCK = 1 << 24  # values per block of _value_range (64 MiB of int32)


def _value_range(values: np.ndarray) -> tuple[int, int]:
    """(min, max) block by block, dropping mapped pages after each block: a whole-array
    ``min()`` would make every page of a memory-mapped file resident at once."""
    low, high = int(values[0]), int(values[0])
    for start in range(0, len(values), _RANGE_BLOCK):
        block = values[start : start + _RANGE_BLOCK]
        low, high = min(low, int(block.min())), max(high, int(block.max()))
        release_pages(block)
    return low, high


def _load_csr(
    directory: Path, key: str, manifest: dict[str, Any], mapped: bool = False
) -> sp.csr_matrix:
    path = directory / f"{key}.*.npy"
    try:
        shape = tuple(int(x) for x in manifest["arrays"][key]["shape"])
    except (KeyError, TypeError, ValueError):
        raise BundleError(f"{directory / MANIFEST}: no shape recorded for '{key}'") from None
    # indptr (8 bytes a row) stays in RAM even when mapped: every row lookup reads it.
    indptr = _load_npy(directory / f"{key}.indptr.npy")
    load = _map_npy if mapped else _load_npy
    indices, data = (load(directory / f"{key}.{part}.npy") for part in ("indices", "data"))
    if len(shape) != 2 or len(indptr) != shape[0] + 1 or len(indices) != len(data):
        raise BundleError(f"{path}: malformed CSR arrays")
    if len(indptr) and (
        indptr[0] != 0 or indptr[-1] != len(indices) or np.any(np.diff(indptr) < 0)
    ):
        raise BundleError(f"{path}: malformed CSR indptr")
    if len(indices):
        low, high = _value_range(indices)
        if low < 0 or high >= shape[1]:
            raise BundleError(f"{path}: CSR column index out of range")
    # Constructing from (data, indices, indptr) keeps row order as stored (score order).
    return sp.csr_matrix((data, indices, indptr), shape=shape, copy=False)


def _load_hybrid(path: Path) -> HybridArrays:
    parts = _load_npz(path)
    try:
        return HybridArrays(
            user_feature_names=parts["user_feature_names"],
            user_feature_embeddings=parts["user_feature_embeddings"],
            user_feature_biases=parts["user_feature_biases"],
            item_representations=parts["item_representations"],
            item_biases=parts["item_biases"],
        )
    except KeyError as exc:
        raise BundleError(f"{path}: missing array {exc}") from None


def _load_artwork(path: Path) -> ArtworkCatalog:
    parts = _load_npz(path)
    try:
        attributes = {k[5:]: v for k, v in parts.items() if k.startswith("attr:")}
        return ArtworkCatalog(
            indptr=parts["indptr"], variant_ids=parts["variant_ids"], attributes=attributes
        )
    except KeyError as exc:
        raise BundleError(f"{path}: missing array {exc}") from None


def _read_index(path: Path) -> Any:
    import faiss

    try:
        return faiss.read_index(str(path))
    except RuntimeError as exc:
        raise BundleError(f"{path}: unreadable FAISS index: {str(exc).splitlines()[0]}") from None


def _set_ef_search(index: Any, ef: int) -> None:
    import faiss

    inner = faiss.downcast_index(index)
    if hasattr(inner, "hnsw"):
        inner.hnsw.efSearch = ef


def _shape_problems(b: Bundle) -> list[str]:
    """Every cross-array consistency rule, as messages naming the file at fault."""
    n_users, n_items, n_regions = len(b.user_ids), len(b.item_ids), len(b.region_names)
    out: list[str] = []

    def expect(ok: bool, message: str) -> None:
        if not ok:
            out.append(message)

    uf, itf = b.user_factors, b.item_factors
    expect(
        uf.ndim == 2 and uf.shape[0] == n_users,
        f"user_factors.npy: shape {uf.shape}, {n_users} users",
    )
    expect(
        itf.ndim == 2 and itf.shape[0] == n_items,
        f"item_factors.npy: shape {itf.shape}, {n_items} items",
    )
    if out:
        return out
    d = itf.shape[1]
    expect(uf.shape[1] == d, f"user_factors.npy: {uf.shape[1]} factors, item_factors has {d}")
    expect(uf.dtype == np.float32, f"user_factors.npy: dtype {uf.dtype}, expected float32")
    expect(itf.dtype == np.float32, f"item_factors.npy: dtype {itf.dtype}, expected float32")
    expect(
        b.index.ntotal == n_items and b.index.d == d,
        f"{INDEX_FILE}: {b.index.ntotal} vectors of dim {b.index.d}, expected {n_items} x {d}",
    )
    expect(
        b.user_items.shape == (n_users, n_items), f"user_items.*.npy: shape {b.user_items.shape}"
    )
    expect(b.popularity.shape == (n_items,), f"popularity.npy: shape {b.popularity.shape}")
    expect(
        b.region_popularity.shape == (n_regions, n_items),
        f"region_popularity.npy: shape {b.region_popularity.shape}, "
        f"expected ({n_regions}, {n_items})",
    )
    expect(
        b.item_availability.shape == (n_items, n_regions),
        f"item_availability.*.npy: shape {b.item_availability.shape}",
    )
    expect(
        b.available_everywhere.shape == (n_items,) and b.available_everywhere.dtype == np.bool_,
        f"available_everywhere.npy: shape {b.available_everywhere.shape} "
        f"dtype {b.available_everywhere.dtype}",
    )
    expect(
        b.candidates.shape == (n_users, n_items), f"candidates.*.npy: shape {b.candidates.shape}"
    )
    expect(
        b.region_candidates.shape == (n_regions, n_items),
        f"region_candidates.*.npy: shape {b.region_candidates.shape}",
    )
    for name, cols, n in (
        ("item_features", b.item_features, n_items),
        ("user_features", b.user_features, n_users),
    ):
        for col, values in cols.items():
            expect(
                values.shape == (n,),
                f"{name}.npz: column '{col}' has shape {values.shape}, expected ({n},)",
            )
    if b.hybrid is not None:
        h = b.hybrid
        f = len(h.user_feature_names)
        dh = h.item_representations.shape[1] if h.item_representations.ndim == 2 else -1
        expect(
            h.item_representations.shape[0] == n_items,
            f"hybrid.npz: item_representations {h.item_representations.shape}",
        )
        expect(h.item_biases.shape == (n_items,), f"hybrid.npz: item_biases {h.item_biases.shape}")
        expect(
            h.user_feature_embeddings.shape == (f, dh),
            f"hybrid.npz: user_feature_embeddings {h.user_feature_embeddings.shape}",
        )
        expect(
            h.user_feature_biases.shape == (f,),
            f"hybrid.npz: user_feature_biases {h.user_feature_biases.shape}",
        )
    if b.artwork is not None:
        a = b.artwork
        expect(a.indptr.shape == (n_items + 1,), f"artwork.npz: indptr shape {a.indptr.shape}")
        if a.indptr.shape == (n_items + 1,):
            expect(
                a.indptr[0] == 0
                and a.indptr[-1] == len(a.variant_ids)
                and bool(np.all(np.diff(a.indptr) >= 0)),
                "artwork.npz: indptr does not cover variant_ids",
            )
        for col, values in a.attributes.items():
            expect(
                values.shape == a.variant_ids.shape,
                f"artwork.npz: attribute '{col}' shape {values.shape}",
            )
    if b.item_gram is not None:
        expect(
            b.item_gram.shape == (d, d),
            f"item_gram.npy: shape {b.item_gram.shape}, expected ({d}, {d})",
        )
    if b.user_projection is not None:
        expect(
            b.user_projection.shape == (len(b.item_ids), d),
            f"user_projection.npy: shape {b.user_projection.shape}, "
            f"expected ({len(b.item_ids)}, {d})",
        )
    return out


def _manifest_problems(b: Bundle, manifest: dict[str, Any]) -> list[str]:
    """Arrays must match what the writer recorded (catches a swapped-in file)."""
    out: list[str] = []
    recorded = manifest.get("arrays", {})
    actual: dict[str, np.ndarray | sp.csr_matrix] = {
        "user_factors": b.user_factors,
        "item_factors": b.item_factors,
        "popularity": b.popularity,
        "region_popularity": b.region_popularity,
        "available_everywhere": b.available_everywhere,
        "user_items": b.user_items,
        "item_availability": b.item_availability,
        "candidates": b.candidates,
        "region_candidates": b.region_candidates,
    }
    for key, value in actual.items():
        entry = recorded.get(key)
        if entry is None:
            out.append(f"{MANIFEST}: no shape recorded for '{key}'")
            continue
        if list(value.shape) != entry.get("shape") or value.dtype.str != entry.get("dtype"):
            out.append(
                f"{key}: shape {list(value.shape)} dtype {value.dtype.str} differs from the "
                f"manifest ({entry.get('shape')} {entry.get('dtype')})"
            )
    return out


# --------------------------------------------------------------------------------------
# Versions and atomic publish
# --------------------------------------------------------------------------------------


def new_version(fingerprint: str = "", now: datetime | None = None) -> str:
    """Sortable version name: UTC time to the microsecond + 8 hex chars of a fingerprint."""
    now = now or datetime.now(UTC)
    tag = hashlib.sha256(f"{fingerprint}|{now.isoformat()}|{os.getpid()}".encode()).hexdigest()[:8]
    return now.strftime("%Y%m%dT%H%M%S%fZ") + "-" + tag


def list_versions(root: Path) -> list[str]:
    """Published versions under ``root``, oldest first (temp dirs and ``current`` excluded)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(
        p.name
        for p in root.iterdir()
        if _VERSION_RE.match(p.name) and p.is_dir() and not p.is_symlink()
    )


def resolve_current(root: Path) -> Path:
    """The version directory ``<root>/current`` points at (BundleError when there is none)."""
    root = Path(root)
    link = root / CURRENT
    if not link.is_symlink() and not link.exists():
        raise BundleError(f"{link}: no current bundle (run `recsvc train --out {root}` first)")
    target = link.resolve()
    if not (target / MANIFEST).is_file():
        raise BundleError(f"{link}: points at {target}, which is not a bundle")
    return target


def publish(
    root: Path,
    build_fn: Callable[[Path, str], Any],
    *,
    fingerprint: str = "",
    make_current: bool = True,
) -> str:
    """Build a new version with ``build_fn(temp_dir, version)`` and publish it atomically.

    Returns the version name. If ``build_fn`` raises (or the process dies), nothing under
    ``root`` changes except a dot-named temp dir, which the next publish removes.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(root)
    version = new_version(fingerprint)
    tmp = root / f"{TMP_PREFIX}{version}-{os.getpid()}"
    tmp.mkdir()
    try:
        build_fn(tmp, version)
        if not (tmp / MANIFEST).is_file():
            raise BundleError(f"{tmp}: build wrote no {MANIFEST}")
        for path in tmp.iterdir():
            fsync_file(path)
        fsync_dir(tmp)
        with _publish_lock(root):
            os.rename(tmp, root / version)
            fsync_dir(root)
            if make_current:
                set_current(root, version)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return version


def set_current(root: Path, version: str) -> None:
    """Point ``<root>/current`` at ``version`` atomically (also used for rollback)."""
    root = Path(root)
    if not (root / version / MANIFEST).is_file():
        raise BundleError(f"{root / version}: not a published version")
    tmp_link = root / f"{TMP_PREFIX}current-{time.monotonic_ns()}-{os.getpid()}"
    os.symlink(version, tmp_link)
    try:
        os.replace(tmp_link, root / CURRENT)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_link.unlink()
        raise
    fsync_dir(root)


@contextlib.contextmanager
def _publish_lock(root: Path) -> Iterator[None]:
    """Serializes the rename + flip of concurrent publishers (released if the process dies)."""
    with open(root / _LOCK, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _remove_stale_temps(root: Path) -> None:
    """Delete temp dirs/links left by dead publishers (a live one's pid is still running)."""
    for path in root.iterdir():
        if not path.name.startswith(TMP_PREFIX):
            continue
        pid = _pid_of(path.name)
        if pid is not None and pid != os.getpid() and _alive(pid):
            continue
        if path.is_symlink() or path.is_file():
            path.unlink(missing_ok=True)
        else:
            shutil.rmtree(path, ignore_errors=True)


def _pid_of(name: str) -> int | None:
    """Temp names end in ``-<pid>`` (see publish and set_current)."""
    last = name.rsplit("-", 1)[-1]
    return int(last) if last.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
