"""Several --data folders: duplicates removed (event ids, rows in both files and events),
users known only from events added, events on unknown items dropped; export refusals."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from recsvc.cli import main
from tests.fixtures.data import write_contract
from training.data import build_matrix
from training.events import export_events, load_sources


def _row(event_id: str, user: str, item: str, ts_s: int, kind: str = "purchase") -> dict:
    return {
        "event_id": event_id,
        "user_id": user,
        "item_id": item,
        "type": kind,
        "timestamp_ms": ts_s * 1000 + 7,
    }


def test_merge_removes_duplicates_and_adds_event_only_users(tmp_path: Path) -> None:
    files = write_contract(
        tmp_path / "files",
        interactions=[
            {"user_id": "a", "item_id": "x", "timestamp": 100, "event_type": "click"},
            {"user_id": "a", "item_id": "x", "timestamp": 100, "event_type": "click"},
            {"user_id": "b", "item_id": "y", "timestamp": 200, "event_type": "purchase"},
        ],
        users=[{"user_id": "a", "region": "CA"}, {"user_id": "b", "region": "US"}],
        items=[{"item_id": "x"}, {"item_id": "y"}, {"item_id": "z"}],
    )
    early, late = tmp_path / "events-1", tmp_path / "events-2"
    export_events(iter([_row("e1", "b", "y", 200), _row("e2", "c", "z", 300)]), early, "t", 0)
    # An overlapping second export (e2 again) plus an event on an item the catalog lacks.
    export_events(iter([_row("e2", "c", "z", 300), _row("e3", "c", "gone", 301)]), late, "t", 0)

    dataset, report = load_sources([files, early, late])
    assert report is not None
    assert report.duplicate_event_ids == 1  # e2
    assert report.duplicate_rows == 1  # b/y purchase at 200 in the files and in events-1
    assert report.rows_unknown_item == 1 and report.users_added == 1
    frame = dataset.interactions
    # a/x twice in one folder is kept twice (two clicks in the same second).
    assert len(frame) == 4
    assert sorted(frame["user_id"].astype(str)) == ["a", "a", "b", "c"]
    assert dataset.users is not None
    users = dataset.users.set_index("user_id")
    assert users.loc["c", "region"] == "" and users.loc["a", "region"] == "CA"
    matrix = build_matrix(dataset)
    assert list(matrix.user_ids) == ["a", "b", "c"] and list(matrix.item_ids) == ["x", "y", "z"]


def test_export_merges_by_event_id(tmp_path: Path) -> None:
    out = tmp_path / "ev"
    first = export_events(iter([_row("e1", "a", "x", 1), _row("e2", "a", "y", 2)]), out, "t", 0)
    again = export_events(iter([_row("e2", "a", "y", 2), _row("e3", "b", "y", 3)]), out, "t", 0)
    assert (first.new, first.total, again.read, again.new, again.total) == (2, 2, 2, 1, 3)
    table = pd.read_parquet(out / "interactions.parquet")
    assert list(table["event_id"]) == ["e1", "e2", "e3"]
    assert list(table["timestamp"]) == [1, 2, 3] and list(table["timestamp_ms"]) == [
        1007,
        2007,
        3007,
    ]


def test_cli_refusals_are_one_line_exit_2(tmp_path: Path, capsys) -> None:
    store = f"sqlite:///{tmp_path / 's.sqlite'}"
    code = main(["events", "export", "--feature-store", store, "--since", "yesterday-ish",
                 "--out", str(tmp_path / "ev")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "--since 'yesterday-ish'" in err and len(err.strip().splitlines()) == 1
    files = write_contract(
        tmp_path / "files", interactions=[{"user_id": "a", "item_id": "x", "timestamp": 1}]
    )
    code = main(["events", "export", "--feature-store", store, "--out", str(files)])
    err = capsys.readouterr().err
    assert code == 2 and "is not an event export" in err
    code = main(["train", "--data", str(files), "--data", str(tmp_path / "nope"),
                 "--out", str(tmp_path / "b")])  # fmt: skip
    assert code == 2 and "--data" in capsys.readouterr().err
    code = main(["train", "--data", str(files), "--out", str(tmp_path / "b"),
                 "--promote", "if-better", "--ndcg-tolerance", "1.5"])  # fmt: skip
    assert code == 2 and "ndcg tolerance" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
