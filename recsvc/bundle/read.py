"""Loading and validating a bundle: checksums, schema version, shapes; never pickle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsvc.bundle.checks import manifest_problems, shape_problems
from recsvc.bundle.errors import BundleError
from recsvc.bundle.files import sha256_file
from recsvc.bundle.format import (
    CSR_KEYS,
    CSR_PARTS,
    CURRENT,
    INDEX_FILE,
    MANIFEST,
    SCHEMA_VERSION,
    SEEN_BY,
    ArtworkCatalog,
    Bundle,
    ColdStartArrays,
    HybridArrays,
)
from recsvc.bundle.mapped import map_npy, value_range
from recsvc.bundle.versions import resolve_current


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

    seen_by, seen_classes = _seen_by(directory, manifest, map_user_arrays)
    user_ids = _load_ids(directory / "user_ids.json")
    item_ids = _load_ids(directory / "item_ids.json")
    region_names = _load_ids(directory / "region_names.json")
    per_user = map_npy if map_user_arrays else _load_npy
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
        cold_start=(
            _load_cold_start(directory / "cold_start.npz") if "cold_start.npz" in files else None
        ),
        user_items_seen_by=seen_by,
        user_items_seen_classes=seen_classes,
    )
    problems = shape_problems(bundle)
    problems += manifest_problems(bundle, manifest)
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
    load = map_npy if mapped else _load_npy
    indices, data = (load(directory / f"{key}.{part}.npy") for part in ("indices", "data"))
    if len(shape) != 2 or len(indptr) != shape[0] + 1 or len(indices) != len(data):
        raise BundleError(f"{path}: malformed CSR arrays")
    if len(indptr) and (
        indptr[0] != 0 or indptr[-1] != len(indices) or np.any(np.diff(indptr) < 0)
    ):
        raise BundleError(f"{path}: malformed CSR indptr")
    if len(indices):
        low, high = value_range(indices)
        if low < 0 or high >= shape[1]:
            raise BundleError(f"{path}: CSR column index out of range")
    # Constructing from (data, indices, indptr) keeps row order as stored (score order).
    return sp.csr_matrix((data, indices, indptr), shape=shape, copy=False)


def _seen_by(
    directory: Path, manifest: dict[str, Any], mapped: bool
) -> tuple[np.ndarray | None, tuple[str, ...]]:
    """The optional kinds of each training cell and their class names (None, () when the
    bundle has none: every training cell then hides its item, as before bundles kept them).
    """
    path = directory / f"{SEEN_BY}.npy"
    entry = manifest.get("arrays", {}).get("user_items_seen_by")
    listed = f"{SEEN_BY}.npy" in manifest["files"]
    if entry is None and not listed:
        return None, ()
    if entry is None or not listed:
        raise BundleError(f"{path}: the manifest lists the file or its classes, not both")
    classes = entry.get("classes") if isinstance(entry, dict) else None
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise BundleError(f"{directory / MANIFEST}: user_items_seen_by has no list of classes")
    return (map_npy if mapped else _load_npy)(path), tuple(classes)


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


def _load_cold_start(path: Path) -> ColdStartArrays:
    parts = _load_npz(path)
    try:
        shape = tuple(int(v) for v in parts["group_counts.shape"])
        counts = sp.csr_matrix(
            (
                parts["group_counts.data"],
                parts["group_counts.indices"],
                parts["group_counts.indptr"],
            ),
            shape=shape,
        )
        return ColdStartArrays(
            source=str(parts["source"][0]),
            prior_strength=float(parts["prior_strength"][0]),
            groupings=tuple(tuple(str(g).split("|")) for g in parts["groupings"] if str(g)),
            group_keys=parts["group_keys"],
            group_counts=counts,
            feature_names=parts["feature_names"],
            feature_weights=parts["feature_weights"],
            intercept=parts["intercept"],
        )
    except (KeyError, ValueError, IndexError) as exc:
        raise BundleError(f"{path}: bad cold-start arrays ({exc})") from None


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
