"""Loading the contract: formats agree, timestamps, weights, string ids, folding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.fixtures.data import write_contract
from training.data import (
    DEFAULT_EVENT_WEIGHTS,
    NO_EVENT_TYPE,
    Dataset,
    build_matrix,
    catalog_item_ids,
    dataset_from_frames,
    item_feature_columns,
    item_regions,
    load_dataset,
    user_feature_columns,
)

EPOCH = 1_767_225_600  # 2026-01-01T00:00:00Z


def assert_same_dataset(a: Dataset, b: Dataset) -> None:
    pd.testing.assert_frame_equal(a.interactions, b.interactions)
    for name in ("users", "items", "artwork"):
        left, right = getattr(a, name), getattr(b, name)
        assert (left is None) == (right is None)
        if left is not None:
            pd.testing.assert_frame_equal(left, right)


def test_csv_and_parquet_give_identical_datasets(
    demo_dataset: Dataset, demo_data_parquet_dir: Path
) -> None:
    parquet = load_dataset(demo_data_parquet_dir)
    assert_same_dataset(demo_dataset, parquet)
    assert parquet.files["interactions"].endswith("interactions.parquet")
    a, b = build_matrix(demo_dataset), build_matrix(parquet)
    assert (a.matrix != b.matrix).nnz == 0
    assert list(a.user_ids) == list(b.user_ids)


def test_dtypes_of_the_loaded_frames(demo_dataset: Dataset) -> None:
    frame = demo_dataset.interactions
    assert list(frame.columns) == ["user_id", "item_id", "timestamp", "event_type", "weight"]
    assert frame["timestamp"].dtype == np.int64
    assert frame["weight"].dtype == np.float32
    categories = frame["user_id"].cat.categories
    assert categories.is_monotonic_increasing and isinstance(categories[0], str)
    assert demo_dataset.users is not None
    assert all(isinstance(v, str) for v in demo_dataset.users.iloc[0])


def test_iso_and_epoch_timestamps_agree(tmp_path: Path) -> None:
    stamps = {
        "epoch": [str(EPOCH), str(EPOCH + 90), f"{EPOCH + 3600}.75"],
        "iso_z": ["2026-01-01T00:00:00Z", "2026-01-01T00:01:30Z", "2026-01-01T01:00:00.75Z"],
        "iso_offset": ["2026-01-01T01:00:00+01:00", "2026-01-01 00:01:30", "2026-01-01T01:00:00"],
    }
    for name, values in stamps.items():
        frame = pd.DataFrame({"user_id": ["a", "b", "c"], "item_id": "x", "timestamp": values})
        directory = write_contract(tmp_path / name, interactions=frame)
        loaded = load_dataset(directory).interactions["timestamp"].tolist()
        assert loaded == [EPOCH, EPOCH + 90, EPOCH + 3600], name


def test_parquet_native_timestamp_types(tmp_path: Path) -> None:
    base = {"user_id": ["a", "b"], "item_id": ["x", "y"]}
    instants = pd.to_datetime([EPOCH, EPOCH + 5], unit="s", utc=True)
    for name, values in {
        "int": [EPOCH, EPOCH + 5],
        "float": [EPOCH + 0.5, EPOCH + 5.9],
        "datetime": instants,
    }.items():
        frame = pd.DataFrame({**base, "timestamp": values})
        directory = write_contract(tmp_path / name, interactions=frame, fmt="parquet")
        assert load_dataset(directory).interactions["timestamp"].tolist() == [EPOCH, EPOCH + 5]


def test_weights_are_event_weight_times_weight_column(tmp_path: Path) -> None:
    body = (
        "user_id,item_id,timestamp,event_type,weight\n"
        f"u,a,{EPOCH},view,3\nu,b,{EPOCH},purchase,0.5\nu,c,{EPOCH},click,1e1\n"
    )
    write_contract(tmp_path, interactions=body)
    weights = load_dataset(tmp_path).interactions["weight"].tolist()
    expected = [
        3 * DEFAULT_EVENT_WEIGHTS["view"],
        0.5 * DEFAULT_EVENT_WEIGHTS["purchase"],
        10 * DEFAULT_EVENT_WEIGHTS["click"],
    ]
    assert weights == pytest.approx(expected)
    custom = load_dataset(tmp_path, event_weights={"purchase": 100.0})
    assert custom.interactions["weight"].tolist()[1] == pytest.approx(50.0)


def test_without_event_type_every_row_weighs_one(tmp_path: Path) -> None:
    write_contract(tmp_path, interactions=f"user_id,item_id,timestamp\nu,a,{EPOCH}\nu,b,{EPOCH}\n")
    frame = load_dataset(tmp_path).interactions
    assert frame["weight"].tolist() == [1.0, 1.0]
    assert set(frame["event_type"]) == {NO_EVENT_TYPE}


def test_ids_stay_strings(tmp_path: Path) -> None:
    body = f"user_id,item_id,timestamp\n007,0042,{EPOCH}\n7,42,{EPOCH}\n1e3,00,{EPOCH}\n"
    users = "user_id,region,age\n007,CA,030\n7,DE,30\n1e3,,\n"
    items = "item_id,regions\n0042,\n42,CA\n00,CA|DE\n"
    write_contract(tmp_path, interactions=body, users=users, items=items)
    dataset = load_dataset(tmp_path)
    matrix = build_matrix(dataset)
    assert list(matrix.user_ids) == sorted(["007", "7", "1e3"])
    assert list(matrix.item_ids) == sorted(["0042", "42", "00"])
    assert dataset.users is not None
    assert dataset.users["age"].tolist() == ["030", "30", ""]
    assert dataset.users["region"].tolist() == ["CA", "DE", ""]


def test_parquet_integer_ids_become_strings(tmp_path: Path) -> None:
    frame = pd.DataFrame({"user_id": [1, 2], "item_id": [10, 20], "timestamp": [EPOCH, EPOCH]})
    write_contract(tmp_path, interactions=frame, fmt="parquet")
    matrix = build_matrix(load_dataset(tmp_path))
    assert list(matrix.user_ids) == ["1", "2"] and list(matrix.item_ids) == ["10", "20"]


def test_build_matrix_folds_duplicates_and_drops_zero_weights(tmp_path: Path) -> None:
    body = (
        "user_id,item_id,timestamp,event_type\n"
        f"u2,b,{EPOCH},view\nu2,b,{EPOCH + 1},purchase\nu1,a,{EPOCH},click\n"
        f"u1,b,{EPOCH},impression\nu1,a,{EPOCH + 5},view\n"
    )
    write_contract(tmp_path, interactions=body, items="item_id\na\nb\nc\n")
    dataset = load_dataset(tmp_path)
    result = build_matrix(dataset)
    assert list(result.user_ids) == ["u1", "u2"]
    assert list(result.item_ids) == ["a", "b", "c"]  # catalog items without events too
    assert result.matrix.dtype == np.float32
    dense = result.matrix.toarray()
    np.testing.assert_allclose(dense, [[3.0, 0.0, 0.0], [0.0, 9.0, 0.0]])
    assert result.matrix.nnz == 2  # the impression (weight 0) is no cell


def test_build_matrix_over_given_universes_drops_outsiders(tmp_path: Path) -> None:
    body = f"user_id,item_id,timestamp\nu1,a,{EPOCH}\nu2,b,{EPOCH}\nu3,c,{EPOCH}\n"
    dataset = load_dataset(write_contract(tmp_path, interactions=body))
    subset = dataset.interactions.iloc[:2]
    result = build_matrix(
        dataset, subset, user_ids=np.array(["u2", "u1", "u9"]), item_ids=np.array(["b", "c"])
    )
    assert list(result.user_ids) == ["u2", "u1", "u9"]
    np.testing.assert_allclose(result.matrix.toarray(), [[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    # Default universes of a subset: its users, but the whole catalog of items.
    default = build_matrix(dataset, subset)
    assert list(default.user_ids) == ["u1", "u2"]
    assert list(default.item_ids) == ["a", "b", "c"]


def test_build_matrix_accepts_plain_string_columns(tmp_path: Path) -> None:
    body = f"user_id,item_id,timestamp\nu1,a,{EPOCH}\nu2,b,{EPOCH}\n"
    dataset = load_dataset(write_contract(tmp_path, interactions=body))
    plain = dataset.interactions.astype({"user_id": "str", "item_id": "str"})
    assert (build_matrix(dataset, plain).matrix != build_matrix(dataset).matrix).nnz == 0


def test_feature_columns_and_regions(demo_dataset: Dataset, tmp_path: Path) -> None:
    assert user_feature_columns(demo_dataset) == ["region", "age_bucket", "gender"]
    assert item_feature_columns(demo_dataset) == ["category", "brand", "price_band"]
    items = "item_id,regions,brand\na, US-9 | CA ,x\nb,,y\nc,DE||,z\nd,|,w\n"
    write_contract(tmp_path, interactions=f"user_id,item_id,timestamp\nu,a,{EPOCH}\n", items=items)
    dataset = load_dataset(tmp_path)
    assert item_regions(dataset) == {"a": ("US-9", "CA"), "c": ("DE",)}
    assert list(catalog_item_ids(dataset)) == ["a", "b", "c", "d"]
    bare = load_dataset(
        write_contract(tmp_path / "bare", interactions=f"user_id,item_id,timestamp\nu,a,{EPOCH}\n")
    )
    assert user_feature_columns(bare) == [] and item_feature_columns(bare) == []
    assert item_regions(bare) == {}


def test_fingerprint_follows_the_bytes(tmp_path: Path) -> None:
    body = f"user_id,item_id,timestamp\nu1,a,{EPOCH}\n"
    first = load_dataset(write_contract(tmp_path / "a", interactions=body)).fingerprint
    same = load_dataset(write_contract(tmp_path / "b", interactions=body)).fingerprint
    changed = load_dataset(write_contract(tmp_path / "c", interactions=body + "u2,a,1\n"))
    assert first == same and len(first) == 64
    assert changed.fingerprint != first


def test_dataset_from_frames_matches_files(demo_data_dir: Path, demo_dataset: Dataset) -> None:
    frames = {
        name: pd.read_csv(demo_data_dir / f"{name}.csv", dtype=str, keep_default_na=False)
        for name in ("interactions", "users", "items", "artwork")
    }
    rebuilt = dataset_from_frames(
        frames["interactions"], frames["users"], frames["items"], frames["artwork"]
    )
    assert_same_dataset(rebuilt, demo_dataset)


def test_default_and_explicit_universes_agree(demo_dataset: Dataset) -> None:
    default = build_matrix(demo_dataset)
    explicit = build_matrix(
        demo_dataset, user_ids=default.user_ids[::-1].copy(), item_ids=default.item_ids
    )
    assert (default.matrix[::-1] != explicit.matrix).nnz == 0
    subset = demo_dataset.interactions.iloc[::2]
    half = build_matrix(demo_dataset, subset)
    assert list(half.item_ids) == list(default.item_ids)
    assert half.matrix.sum() == pytest.approx(float(subset["weight"].sum()), rel=1e-5)


def test_ids_encode_the_same_across_csv_blocks() -> None:
    import pyarrow as pa

    from training.data import _encode, _sorted_categorical

    blocks = [["u2", "u1", "u2"], ["u3", "u1"], ["u0"]]
    column = pa.chunked_array([pa.array(b) for b in blocks])
    categorical = _sorted_categorical(*_encode(column))
    assert list(categorical.categories) == ["u0", "u1", "u2", "u3"]
    assert list(categorical) == [x for b in blocks for x in b]


def test_parquet_row_groups_with_their_own_dictionaries_load_as_csv_does(tmp_path: Path) -> None:
    """Ids are read as dictionary codes; each row group has its own dictionary (different
    values, different order) and a written categorical may carry unused categories."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(5)
    n = 3000
    frame = pd.DataFrame(
        {
            "user_id": [f"u{v:03d}" for v in rng.integers(0, 400, n)],
            "item_id": [f"i{v:02d}" for v in rng.integers(0, 90, n)],
            "timestamp": EPOCH + np.arange(n),
            "event_type": rng.choice(["view", "click", "purchase"], n),
        }
    )
    as_csv = load_dataset(write_contract(tmp_path / "csv", interactions=frame))
    parquet_dir = tmp_path / "parquet"
    parquet_dir.mkdir()
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table, parquet_dir / "interactions.parquet", row_group_size=700)
    assert pq.ParquetFile(parquet_dir / "interactions.parquet").num_row_groups > 1
    loaded = load_dataset(parquet_dir)
    assert_same_dataset(as_csv, loaded)
    assert (build_matrix(as_csv).matrix != build_matrix(loaded).matrix).nnz == 0

    categorical = frame.assign(
        item_id=pd.Categorical(frame["item_id"], categories=[*sorted(set(frame["item_id"])), "zz"])
    )
    (parquet_dir / "interactions.parquet").unlink()
    categorical.to_parquet(parquet_dir / "interactions.parquet", row_group_size=1000)
    loaded = load_dataset(parquet_dir)
    assert "zz" not in set(loaded.interactions["item_id"].cat.categories)
    assert_same_dataset(as_csv, loaded)


def test_parquet_null_id_is_refused_at_its_row(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from training.errors import DataValidationError

    table = pa.table(
        {
            "user_id": ["a", "b", None, "a"],
            "item_id": ["x", "y", "x", "y"],
            "timestamp": [EPOCH] * 4,
        }
    )
    pq.write_table(table, tmp_path / "interactions.parquet", row_group_size=2)
    with pytest.raises(DataValidationError) as info:
        load_dataset(tmp_path)
    assert info.value.row == 4 and info.value.column == "user_id"
