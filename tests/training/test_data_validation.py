"""Bad input is refused with one message naming file, row (header = row 1) and column."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from recsvc.cli import main as cli_main
from tests.fixtures.data import write_contract
from training.data import load_dataset
from training.errors import DataValidationError

GOOD = "user_id,item_id,timestamp,event_type\nu1,i1,1767225600,view\nu2,i2,1767225601,click\n"


def refused(directory: Path, **weights: float) -> DataValidationError:
    before = sorted(p.name for p in directory.iterdir())
    with pytest.raises(DataValidationError) as info:
        load_dataset(directory, event_weights=weights or None)
    assert sorted(p.name for p in directory.iterdir()) == before, "validation wrote files"
    assert "\n" not in str(info.value), "one line"
    return info.value


def check(error: DataValidationError, file: str, row: int | None, column: str | None) -> None:
    message = str(error)
    assert error.file is not None and error.file.endswith(file), message
    assert file in message
    assert error.row == row, message
    if row is not None:
        assert f"row {row}" in message
    assert error.column == column, message
    if column is not None:
        assert f"'{column}'" in message


def test_misspelt_required_column_suggests_the_closest_name(tmp_path: Path) -> None:
    write_contract(tmp_path, interactions="userid,item_id,timestamp\nu1,i1,1767225600\n")
    error = refused(tmp_path)
    check(error, "interactions.csv", 1, "user_id")
    assert "did you mean 'userid'" in str(error)


def test_missing_column_lists_what_was_found(tmp_path: Path) -> None:
    write_contract(tmp_path, interactions="user_id,item_id\nu1,i1\n")
    error = refused(tmp_path)
    check(error, "interactions.csv", 1, "timestamp")
    assert "columns found: user_id, item_id" in str(error)


def test_misspelt_optional_column_is_not_ignored(tmp_path: Path) -> None:
    write_contract(tmp_path, interactions="user_id,item_id,timestamp,wieght\nu1,i1,1767225600,2\n")
    error = refused(tmp_path)
    check(error, "interactions.csv", 1, "wieght")
    assert "did you mean 'weight'" in str(error)


def test_items_region_column_suggests_regions(tmp_path: Path) -> None:
    write_contract(tmp_path, interactions=GOOD, items="item_id,region\ni1,CA\ni2,\n")
    error = refused(tmp_path)
    check(error, "items.csv", 1, "region")
    assert "'regions'" in str(error)


def test_unparsable_timestamp_names_the_first_bad_row(tmp_path: Path) -> None:
    rows = "".join(f"u{i},i{i},2026-01-0{i + 1}T00:00:00Z\n" for i in range(3))
    write_contract(
        tmp_path, interactions="user_id,item_id,timestamp\n" + rows + "u9,i9,yesterday\n"
    )
    error = refused(tmp_path)
    check(error, "interactions.csv", 5, "timestamp")
    assert "'yesterday'" in str(error)


def test_epoch_file_with_an_iso_row_names_that_row(tmp_path: Path) -> None:
    body = "user_id,item_id,timestamp\nu1,i1,1767225600\nu2,i2,2026-01-01T00:00:00Z\n"
    write_contract(tmp_path, interactions=body)
    error = refused(tmp_path)
    check(error, "interactions.csv", 3, "timestamp")
    assert "epoch seconds" in str(error)


def test_epoch_milliseconds_are_refused(tmp_path: Path) -> None:
    body = "user_id,item_id,timestamp\nu1,i1,1767225600\nu2,i2,1767225600000\n"
    write_contract(tmp_path, interactions=body)
    error = refused(tmp_path)
    check(error, "interactions.csv", 3, "timestamp")
    assert "milliseconds" in str(error)


def test_empty_file(tmp_path: Path) -> None:
    write_contract(tmp_path, interactions="")
    error = refused(tmp_path)
    check(error, "interactions.csv", None, None)
    assert "empty" in str(error)


def test_header_without_rows(tmp_path: Path) -> None:
    write_contract(tmp_path, interactions=GOOD, users="user_id,region\n")
    error = refused(tmp_path)
    check(error, "users.csv", None, None)
    assert "no data rows" in str(error)


@pytest.mark.parametrize(
    ("value", "words"),
    [("heavy", "not a number"), ("-1", "negative"), ("nan", "not a finite number")],
)
def test_bad_weight(tmp_path: Path, value: str, words: str) -> None:
    body = f"user_id,item_id,timestamp,weight\nu1,i1,1767225600,1\nu2,i2,1767225600,{value}\n"
    write_contract(tmp_path, interactions=body)
    error = refused(tmp_path)
    check(error, "interactions.csv", 3, "weight")
    assert words in str(error)


def test_empty_weight_cell_is_not_a_number(tmp_path: Path) -> None:
    body = "user_id,item_id,timestamp,weight\nu1,i1,1767225600,\n"
    write_contract(tmp_path, interactions=body)
    check(refused(tmp_path), "interactions.csv", 2, "weight")


@pytest.mark.parametrize("column", ["user_id", "item_id"])
def test_empty_id(tmp_path: Path, column: str) -> None:
    rows = {"user_id": ["u1", "u2", "u3"], "item_id": ["i1", "i2", "i3"]}
    rows[column][2] = ""
    frame = pd.DataFrame({**rows, "timestamp": [1767225600] * 3})
    write_contract(tmp_path, interactions=frame)
    error = refused(tmp_path)
    check(error, "interactions.csv", 4, column)
    assert "empty id" in str(error)


def test_duplicate_user(tmp_path: Path) -> None:
    users = "user_id,region\nu1,CA\nu2,DE\nu1,FR\n"
    write_contract(tmp_path, interactions=GOOD, users=users)
    error = refused(tmp_path)
    check(error, "users.csv", 4, "user_id")
    assert "'u1'" in str(error) and "first seen at row 2" in str(error)


def test_duplicate_item(tmp_path: Path) -> None:
    items = "item_id,category\ni1,books\ni2,toys\ni2,games\n"
    write_contract(tmp_path, interactions=GOOD, items=items)
    check(refused(tmp_path), "items.csv", 4, "item_id")


def test_duplicate_artwork_variant(tmp_path: Path) -> None:
    artwork = "item_id,variant_id,theme\ni1,a,bold\ni1,b,drama\ni2,a,bold\ni1,b,comedy\n"
    write_contract(tmp_path, interactions=GOOD, artwork=artwork)
    error = refused(tmp_path)
    check(error, "artwork.csv", 5, "variant_id")
    assert "'i1' + 'b'" in str(error)


def test_interaction_with_item_missing_from_items_file(tmp_path: Path) -> None:
    write_contract(tmp_path, interactions=GOOD, items="item_id\ni1\n")
    error = refused(tmp_path)
    check(error, "interactions.csv", 3, "item_id")
    assert "'i2'" in str(error) and "items.csv" in str(error)


def test_interaction_with_user_missing_from_users_file(tmp_path: Path) -> None:
    write_contract(tmp_path, interactions=GOOD, users="user_id,region\nu2,CA\n")
    error = refused(tmp_path)
    check(error, "interactions.csv", 2, "user_id")
    assert "'u1'" in str(error) and "users.csv" in str(error)


def test_artwork_for_unknown_item(tmp_path: Path) -> None:
    artwork = "item_id,variant_id\ni1,a\ni7,a\n"
    write_contract(tmp_path, interactions=GOOD, items="item_id\ni1\ni2\n", artwork=artwork)
    error = refused(tmp_path)
    check(error, "artwork.csv", 3, "item_id")
    assert "'i7'" in str(error)


def test_artwork_without_items_file_checks_interaction_items(tmp_path: Path) -> None:
    write_contract(tmp_path, interactions=GOOD, artwork="item_id,variant_id\ni3,a\n")
    check(refused(tmp_path), "artwork.csv", 2, "item_id")


def test_unknown_event_type_unless_configured(tmp_path: Path) -> None:
    body = GOOD + "u3,i3,1767225602,wishlist\n"
    write_contract(tmp_path, interactions=body)
    error = refused(tmp_path)
    check(error, "interactions.csv", 4, "event_type")
    assert "'wishlist'" in str(error)
    dataset = load_dataset(tmp_path, event_weights={"wishlist": 3.0})
    assert dataset.interactions["weight"].tolist() == [1.0, 2.0, 3.0]


def test_misspelt_event_type_suggests(tmp_path: Path) -> None:
    write_contract(tmp_path, interactions=GOOD + "u3,i3,1767225602,purchse\n")
    assert "did you mean 'purchase'" in str(refused(tmp_path))


def test_negative_configured_event_weight(tmp_path: Path) -> None:
    write_contract(tmp_path, interactions=GOOD)
    assert "view" in str(refused(tmp_path, view=-1.0))


def test_csv_with_a_ragged_row(tmp_path: Path) -> None:
    write_contract(tmp_path, interactions=GOOD + "u3,i3,1767225602,view,extra\n")
    error = refused(tmp_path)
    check(error, "interactions.csv", 4, None)
    assert "cannot parse CSV" in str(error) and "extra" in str(error)


def test_both_formats_present(tmp_path: Path) -> None:
    write_contract(tmp_path, interactions=GOOD)
    write_contract(tmp_path, interactions=pd.read_csv(tmp_path / "interactions.csv"), fmt="parquet")
    error = refused(tmp_path)
    assert "interactions.csv" in str(error) and "interactions.parquet" in str(error)


def test_missing_interactions_file_suggests_near_name(tmp_path: Path) -> None:
    (tmp_path / "interaction.csv").write_text(GOOD)
    error = refused(tmp_path)
    assert "interactions.csv" in str(error) and "'interaction.csv'" in str(error)


def test_parquet_errors_use_the_same_row_numbers(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"user_id": ["u1", "u2"], "item_id": ["i1", "i2"], "timestamp": [1767225600, 1]}
    )
    frame["weight"] = [1.0, -2.0]
    write_contract(tmp_path, interactions=frame, fmt="parquet")
    check(refused(tmp_path), "interactions.parquet", 3, "weight")


def test_missing_data_dir(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="does not exist"):
        load_dataset(tmp_path / "nope")


def test_cli_demo_data_bad_arguments_exit_2_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    assert cli_main(["demo-data", "--out", str(out), "--users", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--users" in err[0]
    assert not out.exists() or not any(out.iterdir())


def test_non_utf8_row_is_located(tmp_path: Path) -> None:
    (tmp_path / "interactions.csv").write_bytes(
        b"user_id,item_id,timestamp\nu1,i1,1767225600\nu\xe9,i1,1767225600\n"
    )
    error = refused(tmp_path)
    check(error, "interactions.csv", 3, None)
    assert "UTF8" in str(error)


def test_non_utf8_header(tmp_path: Path) -> None:
    (tmp_path / "interactions.csv").write_bytes(b"\xe9user_id,item_id,timestamp\nu,i,1\n")
    check(refused(tmp_path), "interactions.csv", 1, None)


def test_nested_parquet_column_is_refused(tmp_path: Path) -> None:
    users = pd.DataFrame({"user_id": ["u1", "u2"], "tags": [["a"], ["b", "c"]]})
    write_contract(tmp_path, interactions=GOOD, fmt="csv")
    write_contract(tmp_path, users=users, fmt="parquet")
    check(refused(tmp_path), "users.parquet", None, "tags")


def test_empty_variant_id(tmp_path: Path) -> None:
    artwork = "item_id,variant_id,theme\ni1,a,bold\ni2,,drama\n"
    write_contract(tmp_path, interactions=GOOD, artwork=artwork)
    check(refused(tmp_path), "artwork.csv", 3, "variant_id")


def test_nan_epoch_timestamp(tmp_path: Path) -> None:
    body = "user_id,item_id,timestamp\nu1,i1,1767225600.5\nu2,i2,nan\n"
    write_contract(tmp_path, interactions=body)
    check(refused(tmp_path), "interactions.csv", 3, "timestamp")
