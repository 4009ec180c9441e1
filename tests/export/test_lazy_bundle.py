"""Export and audience read the bundle's per-user arrays as memory maps, a chunk at a time.

The output must be the same as from a bundle loaded whole (as serving loads it), and the
pages a chunk touched must leave the process's RSS afterwards (what bounds export memory).
"""

from __future__ import annotations

import mmap
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import recsvc.bundle.mapped as bundle_module
from recsvc.bundle import Bundle, BundleError, load_bundle, release_mapped_pages, resolve_current
from recsvc.export.job import ExportOptions, prepare_export

MAPPED = ("user_factors", "user_items", "candidates")


def _mapping_base(array: np.ndarray) -> object:
    base: object = array
    while isinstance(base, np.ndarray):
        base = base.base
    return base


def _per_user_arrays(bundle: Bundle) -> list[np.ndarray]:
    return [
        bundle.user_factors,
        bundle.user_items.indices,
        bundle.user_items.data,
        bundle.candidates.indices,
        bundle.candidates.data,
    ]


def _resident_kib(path: Path) -> int | None:
    """Rss of this process's mappings of ``path`` (/proc/self/smaps), None if unmapped."""
    total, inside = None, False
    target = str(path.resolve())
    with open("/proc/self/smaps", encoding="utf-8", errors="replace") as fh:
        for line in fh:
            first = line.split(maxsplit=1)[0]
            if "-" in first and not first.endswith(":"):  # a mapping's header line
                inside = line.rstrip("\n").endswith(target)
                if inside and total is None:
                    total = 0
            elif inside and first == "Rss:":
                assert total is not None
                total += int(line.split()[1])
    return total


def test_mapped_load_has_the_same_arrays(export_bundle_root: Path) -> None:
    whole = load_bundle(export_bundle_root)
    mapped = load_bundle(export_bundle_root, map_user_arrays=True)
    for full, lazy in zip(_per_user_arrays(whole), _per_user_arrays(mapped), strict=True):
        assert isinstance(_mapping_base(lazy), mmap.mmap)
        assert not isinstance(_mapping_base(full), mmap.mmap)
        assert not lazy.flags.writeable  # a stray write fails instead of corrupting the file
        np.testing.assert_array_equal(full, lazy)
    for name in MAPPED[1:]:
        np.testing.assert_array_equal(getattr(whole, name).indptr, getattr(mapped, name).indptr)
    release_mapped_pages(whole)  # a no-op for arrays in RAM
    np.testing.assert_array_equal(whole.user_factors, mapped.user_factors)


def _export(root: Path, out: Path, mapped: bool, **options: object) -> pd.DataFrame:
    opts = ExportOptions(root, out, progress=False, map_user_arrays=mapped, **options)  # type: ignore[arg-type]
    manifest = prepare_export(opts).run()
    assert manifest["arguments"]["map_user_arrays"] is mapped
    return pq.read_table(out).to_pandas()


@pytest.mark.parametrize(
    "options",
    [
        {"k": 6},
        {"k": 8, "include_seen": True, "chunk_size": 7},
        {"k": 5, "segment": 'region in ("CA", "DE")', "chunk_size": 11},
        {"k": 4, "users": "users.csv", "suppress": "suppress.csv"},
    ],
    ids=["all", "include-seen", "segment", "users-file"],
)
def test_export_from_mapped_bundle_equals_export_from_loaded_bundle(
    export_bundle_root: Path, tmp_path: Path, options: dict[str, object]
) -> None:
    (tmp_path / "users.csv").write_text(
        "user_id,region\nu003,\nu010,DE\nnew-user,CA\nu042,\nnobody,\nu079,US-9\n"
    )
    (tmp_path / "suppress.csv").write_text("user_id,item_id\nu010,i001\nu042,\n")
    resolved = {
        key: tmp_path / str(value) if key in ("users", "suppress") else value
        for key, value in options.items()
    }
    whole = _export(export_bundle_root, tmp_path / "whole.parquet", False, **resolved)
    lazy = _export(export_bundle_root, tmp_path / "lazy.parquet", True, **resolved)
    assert len(lazy) > 0
    pd.testing.assert_frame_equal(whole, lazy)


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc")
def test_touched_pages_are_released(export_bundle_root: Path, tmp_path: Path) -> None:
    directory = resolve_current(export_bundle_root)
    bundle = load_bundle(export_bundle_root, map_user_arrays=True)
    files = [directory / f"{name}.npy" for name in ("user_factors", "candidates.indices")]
    float(bundle.user_factors.sum())
    int(bundle.candidates.indices.sum())
    assert all((_resident_kib(f) or 0) > 0 for f in files)
    release_mapped_pages(bundle)
    assert [_resident_kib(f) for f in files] == [0, 0]

    # A whole export leaves none of its chunks' rows resident.
    job = prepare_export(
        ExportOptions(export_bundle_root, tmp_path / "x.parquet", 5, chunk_size=16, progress=False)
    )
    job.run()
    for name in ("user_factors.npy", "candidates.indices.npy", "user_items.indices.npy"):
        assert _resident_kib(directory / name) == 0, name


def test_mapped_load_still_validates(
    export_bundle_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(resolve_current(export_bundle_root), copy)
    path = copy / "candidates.indices.npy"
    indices = np.load(path)
    indices[-1] = 10_000  # past the 50 items, same file size
    np.save(path, indices)
    monkeypatch.setattr(bundle_module, "RANGE_BLOCK", 7)  # several blocks, last one bad
    with pytest.raises(BundleError, match="sha256 mismatch"):
        load_bundle(copy, map_user_arrays=True)
    with pytest.raises(BundleError, match="column index out of range"):
        load_bundle(copy, map_user_arrays=True, verify_checksums=False)
    size = (copy / "user_factors.npy").stat().st_size
    (copy / "user_factors.npy").write_bytes(b"\x93NUMPY" + b"?" * (size - 6))
    with pytest.raises(BundleError, match=r"user_factors\.npy: unreadable array"):
        load_bundle(copy, map_user_arrays=True, verify_checksums=False)


def test_row_reader_copies_exactly_the_batch_rows(export_bundle_root: Path) -> None:
    from recsvc.export.rows import RowReader
    from recsvc.pipeline.model import build_model
    from recsvc.pipeline.users import UserInput

    bundle = load_bundle(export_bundle_root, map_user_arrays=True)
    model = build_model(bundle)
    assert RowReader.applies(model)
    reader = RowReader(model)
    try:
        ids = ["u079", "u003", "nobody", "u004", "u005", "u003", "u040"]
        local = reader.model_for([UserInput(user_id=u) for u in ids])
    finally:
        reader.close()
    lb = local.bundle
    assert sorted(lb.user_index) == ["u003", "u004", "u005", "u040", "u079"]
    for user, i in lb.user_index.items():
        u = bundle.user_index[user]
        np.testing.assert_array_equal(lb.user_factors[i], bundle.user_factors[u])
        for key in MAPPED[1:]:
            full, part = getattr(bundle, key), getattr(lb, key)
            for attr in ("indices", "data"):
                whole_row = getattr(full, attr)[full.indptr[u] : full.indptr[u + 1]]
                local_row = getattr(part, attr)[part.indptr[i] : part.indptr[i + 1]]
                np.testing.assert_array_equal(local_row, whole_row)  # order kept (score order)
        for column, values in bundle.user_features.items():
            assert lb.user_features[column][i] == values[u]
        assert local.user_regions[i] == model.user_regions[u]
        for (col, codes, names), (_, full_codes, _) in zip(
            local.user_feature_codes, model.user_feature_codes, strict=True
        ):
            assert names[codes[i]] == names[full_codes[u]] == bundle.user_features[col][u]
    assert not RowReader.applies(build_model(load_bundle(export_bundle_root)))
