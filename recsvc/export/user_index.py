"""A FAISS inner-product index over a bundle's user vectors, cached inside the bundle.

Audiences ask the reverse question of export (which users for this item?), so they search
user vectors with item vectors. The index is built on first use and written next to the
bundle's files (``<bundle>/cache/user_index.faiss`` + ``.json``) with ``faiss.write_index``
(no pickle) through a temp file and a rename. On reuse it is validated against the bundle
(version, shape, a checksum of the user vectors and of the index file); a stale or corrupt
cache is rebuilt, and a read-only bundle directory just means no cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from recsvc.bundle import Bundle
from recsvc.export.output import sha256_file, write_json_atomic

log = logging.getLogger(__name__)

CACHE_DIR = "cache"
INDEX_NAME = "user_index.faiss"
META_NAME = "user_index.json"
CACHE_FORMAT = 1


def vectors_digest(vectors: np.ndarray) -> str:
    data = np.ascontiguousarray(vectors, dtype=np.float32)
    digest = hashlib.sha256()
    digest.update(repr(data.shape).encode())
    flat = data.reshape(-1)
    step = 1 << 22  # hash in blocks: no second full copy of a large matrix
    for start in range(0, flat.size, step):
        digest.update(flat[start : start + step].tobytes())
    return digest.hexdigest()


def build_user_index(vectors: np.ndarray) -> Any:
    """Exact inner-product index: audiences are few queries over many users, so a flat
    scan (one BLAS pass per batch of items) is both exact and fast enough."""
    import faiss

    data = np.ascontiguousarray(vectors, dtype=np.float32)
    index = faiss.IndexFlatIP(data.shape[1])
    index.add(data)
    return index


def load_or_build_user_index(bundle: Bundle) -> tuple[Any, str]:
    """The user index and how it was obtained: ``cached``, ``built`` or ``built (no cache: …)``."""
    directory = bundle.path / CACHE_DIR
    digest = vectors_digest(bundle.user_factors)
    expected = {
        "format": CACHE_FORMAT,
        "bundle_version": bundle.version,
        "n_users": int(bundle.user_factors.shape[0]),
        "dim": int(bundle.user_factors.shape[1]),
        "user_factors_sha256": digest,
        "metric": "inner_product",
    }
    cached = _read_cached(directory, expected)
    if cached is not None:
        return cached, "cached"
    index = build_user_index(bundle.user_factors)
    try:
        _write_cache(directory, index, expected)
    except OSError as exc:
        log.warning("user index not cached in %s: %s", directory, exc)
        return index, f"built (no cache: {exc.strerror or exc})"
    return index, "built"


def _read_cached(directory: Path, expected: dict[str, Any]) -> Any | None:
    import faiss

    meta_path, index_path = directory / META_NAME, directory / INDEX_NAME
    if not meta_path.is_file() or not index_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        stale = [k for k, v in expected.items() if meta.get(k) != v]
        if stale:
            log.info("user index cache is stale (%s); rebuilding", ", ".join(stale))
            return None
        if sha256_file(index_path) != meta.get("index_sha256"):
            log.warning("user index cache %s fails its checksum; rebuilding", index_path)
            return None
        index = faiss.read_index(str(index_path))
    except (OSError, ValueError, RuntimeError) as exc:
        log.warning("user index cache unreadable (%s); rebuilding", exc)
        return None
    if index.ntotal != expected["n_users"] or index.d != expected["dim"]:
        log.warning("user index cache has the wrong shape; rebuilding")
        return None
    return index


def _write_cache(directory: Path, index: Any, meta: dict[str, Any]) -> None:
    import faiss

    directory.mkdir(exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{INDEX_NAME}.", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        faiss.write_index(index, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        index_sha = sha256_file(Path(tmp))
        os.replace(tmp, directory / INDEX_NAME)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    # The meta file goes last: a crash in between leaves a checksum mismatch (rebuild).
    write_json_atomic(directory / META_NAME, {**meta, "index_sha256": index_sha})
