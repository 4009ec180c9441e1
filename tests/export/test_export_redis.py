"""Export with the production feature store (real Redis): events and profiles count."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from feature_store.base import StoredEvent
from feature_store.factory import open_store
from recsvc.export.job import ExportOptions, prepare_export


@pytest.mark.redis
def test_export_reads_profiles_and_events_from_redis(
    export_bundle_root: Path, redis_server_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    users = tmp_path / "users.txt"
    users.write_text("u003\nu004\nnew-user\n")

    def export(name: str, store_url: str | None) -> pd.DataFrame:
        out = tmp_path / name
        options = ExportOptions(
            export_bundle_root, out, 5, users=users, feature_store=store_url, progress=False
        )
        prepare_export(options).run()
        return pd.read_parquet(out)

    url = f"{redis_server_url}?prefix={redis_prefix}"
    before = export("before.parquet", url)  # empty store: same as no store at all
    pd.testing.assert_frame_equal(before, export("nostore.parquet", None))
    bought = before[before.user_id == "u003"].item_id.iloc[0]
    store = open_store(url)
    try:
        store.record_events([StoredEvent("ev-1", "u003", bought, "purchase", 1_000)])
        store.write_user_profiles([("new-user", {"region": "DE"})])
    finally:
        store.close()
    after = export("after.parquet", url)
    assert bought not in set(after[after.user_id == "u003"].item_id)
    assert len(after[after.user_id == "u003"]) == 5
    # The profile's region moves the unknown user from global to German popularity.
    assert after[after.user_id == "new-user"].item_id.tolist() != (
        before[before.user_id == "new-user"].item_id.tolist()
    )
    pd.testing.assert_frame_equal(
        after[after.user_id == "u004"].reset_index(drop=True),
        before[before.user_id == "u004"].reset_index(drop=True),
    )
