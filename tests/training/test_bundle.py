"""Bundle write/load/validate and atomic publish (recsvc.bundle)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from recsvc.bundle import (
    CURRENT,
    MANIFEST,
    ArtworkCatalog,
    Bundle,
    BundleError,
    HybridArrays,
    list_versions,
    load_bundle,
    publish,
    resolve_current,
    set_current,
    write_bundle,
)
from training.index import build_index

REPO = Path(__file__).resolve().parents[2]


def _random_bundle(seed: int = 0, users: int = 30, items: int = 20, d: int = 4) -> Bundle:
    """A small bundle with every optional part filled, from random arrays."""
    rng = np.random.default_rng(seed)
    regions = np.array(["CA", "DE", "US-9"])
    uf = rng.standard_normal((users, d)).astype(np.float32)
    itf = rng.standard_normal((items, d)).astype(np.float32)
    index, _ = build_index(itf)
    seen = sp.random(users, items, density=0.2, format="csr", random_state=seed, dtype=np.float32)
    avail = sp.csr_matrix(rng.random((items, len(regions))) < 0.5)
    cands = sp.csr_matrix(
        (
            np.array([3.0, 2.0, 1.0], np.float32),
            np.array([7, 2, 9]),
            np.array([0, 3] + [3] * (users - 1)),
        ),
        shape=(users, items),
    )
    variants = np.array([f"v{i}" for i in range(items * 2)])
    return Bundle(
        path=Path("."),
        version="test",
        manifest={"note": "synthetic"},
        user_ids=np.array([f"u{i}" for i in range(users)]),
        item_ids=np.array([f"i{i}" for i in range(items)]),
        user_index={},
        item_index={},
        user_factors=uf,
        item_factors=itf,
        index=index,
        user_items=seen,
        popularity=rng.random(items).astype(np.float32),
        region_names=regions,
        region_popularity=rng.random((len(regions), items)).astype(np.float32),
        item_availability=avail,
        available_everywhere=rng.random(items) < 0.3,
        item_features={"category": np.array(["a", "b"] * (items // 2))},
        user_features={"region": rng.choice(regions, users)},
        candidates=cands,
        region_candidates=sp.csr_matrix((len(regions), items), dtype=np.float32),
        hybrid=HybridArrays(
            user_feature_names=np.array(["region=CA", "region=DE"]),
            user_feature_embeddings=rng.standard_normal((2, 3)).astype(np.float32),
            user_feature_biases=rng.standard_normal(2).astype(np.float32),
            item_representations=rng.standard_normal((items, 3)).astype(np.float32),
            item_biases=rng.standard_normal(items).astype(np.float32),
        ),
        artwork=ArtworkCatalog(
            indptr=np.arange(0, items * 2 + 1, 2, dtype=np.int64),
            variant_ids=variants,
            attributes={"theme": np.array(["x", "y"] * items)},
        ),
        item_gram=itf.astype(np.float64).T @ itf.astype(np.float64),
    )


def _assert_same(a: Bundle, b: Bundle) -> None:
    for name in (
        "user_ids",
        "item_ids",
        "user_factors",
        "item_factors",
        "popularity",
        "region_names",
        "region_popularity",
        "available_everywhere",
        "item_gram",
    ):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    for name in ("user_items", "item_availability", "candidates", "region_candidates"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.shape == y.shape and x.dtype == y.dtype, name
        # Row contents in stored order (candidate rows are score-ordered, not sorted).
        np.testing.assert_array_equal(x.indptr, y.indptr, err_msg=name)
        np.testing.assert_array_equal(x.indices, y.indices, err_msg=name)
        np.testing.assert_array_equal(x.data, y.data, err_msg=name)
    for name in ("item_features", "user_features"):
        assert getattr(a, name).keys() == getattr(b, name).keys()
        for col in getattr(a, name):
            np.testing.assert_array_equal(getattr(a, name)[col], getattr(b, name)[col])
    assert (a.hybrid is None) == (b.hybrid is None)
    if a.hybrid is not None and b.hybrid is not None:
        for f in ("user_feature_names", "user_feature_embeddings", "item_representations"):
            np.testing.assert_array_equal(getattr(a.hybrid, f), getattr(b.hybrid, f))
    assert (a.artwork is None) == (b.artwork is None)
    if a.artwork is not None and b.artwork is not None:
        np.testing.assert_array_equal(a.artwork.indptr, b.artwork.indptr)
        np.testing.assert_array_equal(a.artwork.variant_ids, b.artwork.variant_ids)
        np.testing.assert_array_equal(a.artwork.attributes["theme"], b.artwork.attributes["theme"])
    assert a.index.ntotal == b.index.ntotal


def test_write_load_round_trip_keeps_every_array(tmp_path: Path) -> None:
    original = _random_bundle()
    manifest = write_bundle(tmp_path / "v", original)
    loaded = load_bundle(tmp_path / "v")
    _assert_same(original, loaded)
    assert loaded.manifest["note"] == "synthetic" and manifest["schema_version"] == 1
    assert loaded.user_index["u3"] == 3 and loaded.item_index["i19"] == 19
    # Candidate rows keep score order (7, 2, 9), which is not column order.
    items, scores = loaded.user_candidates(0)
    assert items.tolist() == [7, 2, 9] and scores.tolist() == [3.0, 2.0, 1.0]
    # The index answers like the factors it holds.
    q = loaded.item_factors[:3]
    _, found = loaded.index.search(q, 1)
    np.testing.assert_array_equal(found[:, 0], np.argmax(q @ loaded.item_factors.T, axis=1))


def test_no_file_needs_pickle(tmp_path: Path) -> None:
    write_bundle(tmp_path, _random_bundle())
    for path in tmp_path.glob("*.np[yz]"):
        loaded = np.load(path, allow_pickle=False)  # raises on object arrays
        arrays = [loaded[k] for k in loaded.files] if hasattr(loaded, "files") else [loaded]
        assert all(a.dtype.kind != "O" for a in arrays), path.name


def test_write_refuses_inconsistent_shapes(tmp_path: Path) -> None:
    bad = replace(_random_bundle(), popularity=np.zeros(3, np.float32))
    with pytest.raises(BundleError, match=r"popularity\.npy"):
        write_bundle(tmp_path, bad)


@pytest.fixture
def written(tmp_path: Path) -> Path:
    directory = tmp_path / "bundle"
    write_bundle(directory, _random_bundle())
    return directory


def test_flipped_byte_is_a_checksum_error_naming_the_file(written: Path) -> None:
    path = written / "item_factors.npy"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match=r"item_factors\.npy: sha256 mismatch"):
        load_bundle(written)


def test_truncated_file_is_refused_even_without_checksums(written: Path) -> None:
    path = written / "candidates.indices.npy"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(BundleError, match=r"candidates\.indices\.npy: 100 bytes"):
        load_bundle(written, verify_checksums=False)


def test_missing_file_is_named(written: Path) -> None:
    (written / "item_index.faiss").unlink()
    with pytest.raises(BundleError, match=r"item_index\.faiss: missing"):
        load_bundle(written)


def test_swapped_in_file_with_matching_checksum_fails_shape_check(written: Path) -> None:
    """A file replaced *and* re-hashed (e.g. by hand) still has to agree with the rest."""
    np.save(written / "popularity.npy", np.zeros(5, np.float32), allow_pickle=False)
    manifest = json.loads((written / MANIFEST).read_text())
    from recsvc.bundle import sha256_file

    manifest["files"]["popularity.npy"] = {
        "bytes": (written / "popularity.npy").stat().st_size,
        "sha256": sha256_file(written / "popularity.npy"),
    }
    (written / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"popularity\.npy: shape \(5,\)"):
        load_bundle(written)


def test_unknown_schema_version_and_garbage_manifest(written: Path) -> None:
    manifest = json.loads((written / MANIFEST).read_text())
    manifest["schema_version"] = 99
    (written / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="schema_version 99 is not supported"):
        load_bundle(written)
    (written / MANIFEST).write_text("{not json")
    with pytest.raises(BundleError, match=r"manifest\.json: unreadable"):
        load_bundle(written)


def test_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="missing"):
        load_bundle(tmp_path)
    with pytest.raises(BundleError, match="no current bundle"):
        resolve_current(tmp_path)


def _build_copy(source: Path):  # type: ignore[no-untyped-def]
    def build(tmp: Path, version: str) -> None:
        for path in source.iterdir():
            shutil.copy2(path, tmp / path.name)

    return build


def test_publish_flips_current_and_versions_sort(written: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    first = publish(root, _build_copy(written))
    second = publish(root, _build_copy(written))
    assert list_versions(root) == [first, second] and first < second
    assert os.readlink(root / CURRENT) == second  # relative: the root can move
    assert load_bundle(root).path == root / second
    set_current(root, first)  # rollback
    assert resolve_current(root) == root / first
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp-")]


def test_failed_build_leaves_root_as_it_was(written: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    first = publish(root, _build_copy(written))
    before = sorted(p.name for p in root.iterdir())

    def explode(tmp: Path, version: str) -> None:
        (tmp / "user_ids.json").write_text("[]")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        publish(root, explode)
    assert sorted(p.name for p in root.iterdir()) == before
    assert resolve_current(root) == root / first


_CRASHING_PUBLISHER = textwrap.dedent(
    """
    import shutil, sys, time
    from pathlib import Path
    from recsvc.bundle import publish

    source, root, ready = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])

    def build(tmp, version):
        files = sorted(source.iterdir())
        for path in files[: len(files) // 2]:
            shutil.copy2(path, tmp / path.name)
        ready.write_text(str(tmp))
        time.sleep(60)  # killed here, half written

    publish(root, build)
    """
)


def test_sigkill_mid_publish_leaves_current_and_versions_intact(
    written: Path, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    first = publish(root, _build_copy(written))
    ready = tmp_path / "ready"
    proc = subprocess.Popen(
        [sys.executable, "-c", _CRASHING_PUBLISHER, str(written), str(root), str(ready)],
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), "publisher never got half way"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    half = Path(ready.read_text())
    assert half.exists() and half.name.startswith(".tmp-")  # the debris is dot-named
    assert list_versions(root) == [first]
    assert resolve_current(root) == root / first
    load_bundle(root)  # still loads, checksums and all
    # The next publish cleans the dead publisher's temp dir up.
    second = publish(root, _build_copy(written))
    assert not half.exists()
    assert list_versions(root) == [first, second]
