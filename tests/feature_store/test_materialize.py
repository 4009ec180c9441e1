"""materialize(): contract users/items into both stores; the ``recsvc materialize`` CLI."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from feature_store import OnlineStore, open_store
from recsvc.cli import main
from training.data import Dataset
from training.materialize import materialize


def expected_row(frame: pd.DataFrame, key: str, row_id: str) -> dict[str, str]:
    row = frame[frame[key] == row_id].iloc[0]
    return {c: "" if pd.isna(row[c]) else str(row[c]) for c in frame.columns if c != key}


def test_materialize_users_and_items(
    make_store: Callable[..., OnlineStore], demo_dataset: Dataset
) -> None:
    store = make_store()
    users, items = demo_dataset.users, demo_dataset.items
    assert users is not None and items is not None
    seen: list[tuple[str, int, int]] = []
    counts = materialize(
        demo_dataset, store, batch_size=64, progress=lambda t, d, n: seen.append((t, d, n))
    )
    assert counts == {"users": len(users), "items": len(items)}
    assert seen[-1] == ("items", len(items), len(items))
    assert ("users", 64, len(users)) in seen  # written in batches
    for user_id in users["user_id"].iloc[:: max(1, len(users) // 7)]:
        profile = dict(store.read_user(str(user_id))[0].profile)
        assert profile == expected_row(users, "user_id", user_id)
        assert "region" in profile
    some = [str(i) for i in items["item_id"].iloc[:20]]
    got = store.get_item_attributes(some)
    assert got == {i: expected_row(items, "item_id", i) for i in some}
    assert all("regions" in attrs for attrs in got.values())
    # a re-run rewrites in place: same counts, same rows
    assert materialize(demo_dataset, store) == counts
    assert store.get_item_attributes(some) == got


def test_materialize_cli(demo_data_dir: Path, tmp_path: Path, demo_dataset: Dataset) -> None:
    url = f"sqlite:///{tmp_path / 'fs.sqlite'}"
    rc = main(["materialize", "--data", str(demo_data_dir), "--feature-store", url, "--quiet"])
    assert rc == 0
    store = open_store(url)
    try:
        assert demo_dataset.users is not None
        user_id = str(demo_dataset.users["user_id"].iloc[0])
        assert dict(store.read_user(user_id)[0].profile) == expected_row(
            demo_dataset.users, "user_id", user_id
        )
    finally:
        store.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--feature-store", "mysql://x/1"], "unsupported scheme 'mysql'"),
        (["--feature-store", "redis://127.0.0.1:6379/0?cap=1"], "unknown setting 'cap'"),
        (["--batch-size", "0"], "--batch-size"),
    ],
)
def test_materialize_cli_errors_are_one_line(
    demo_data_dir: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["materialize", "--data", str(demo_data_dir), "--quiet", *args])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err and err.count("\n") == 1


def test_materialize_cli_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["materialize", "--data", str(tmp_path / "nope"), "--quiet"])
    assert rc == 2
    assert "--data" in capsys.readouterr().err
