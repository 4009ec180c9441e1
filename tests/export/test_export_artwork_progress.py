"""Artwork through a learning policy (no exploration) and progress output."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd

from feature_store.base import StoredEvent
from feature_store.factory import open_store
from recsvc.bandit.base import ArtworkContext
from recsvc.bandit.registry import make_policy
from recsvc.bundle import Bundle
from recsvc.export.job import ExportOptions, prepare_export
from recsvc.export.output import manifest_path
from recsvc.export.progress import Progress


def _export(root: Path, out: Path, **extra: object) -> pd.DataFrame:
    prepare_export(ExportOptions(root, out, 5, progress=False, **extra)).run()  # type: ignore[arg-type]
    return pd.read_parquet(out)


def test_policy_best_posterior_mean_without_exploration(
    export_bundle_root: Path, export_bundle: Bundle, tmp_path: Path
) -> None:
    baseline = _export(export_bundle_root, tmp_path / "default.parquet")
    art = export_bundle.artwork
    assert art is not None
    n_variants = {
        str(i): int(art.indptr[j + 1] - art.indptr[j]) for i, j in export_bundle.item_index.items()
    }
    counts = baseline.item_id.value_counts()
    item = next(i for i in counts.index if n_variants[i] >= 2)
    first, second = art.variant_ids[art.indptr[export_bundle.item_index[item]] :][:2].tolist()
    assert set(baseline[baseline.item_id == item].artwork_variant_id) == {first}

    # Plant evidence through the policy's own update path: the second variant gets clicked.
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    store = open_store(url)
    policy = make_policy("ts", export_bundle)
    ctx = ArtworkContext(user_id="anyone")
    deltas = []
    for n in range(200):
        for variant, clicked in ((first, n < 4), (second, n < 120)):
            for kind in ("impression", "click") if clicked else ("impression",):
                event = StoredEvent(f"{variant}-{n}-{kind}", "anyone", item, kind, 1, "", variant)
                deltas += policy.updates_for(ctx, event)
    store.incr_counters(deltas)
    store.close()

    runs = [
        _export(export_bundle_root, tmp_path / f"ts{n}.parquet", policy="ts", feature_store=url)
        for n in range(2)
    ]
    pd.testing.assert_frame_equal(runs[0], runs[1])  # no exploration: deterministic
    chosen = runs[0][runs[0].item_id == item].artwork_variant_id
    assert len(chosen) > 0 and set(chosen) == {second}
    # The rankings themselves do not depend on the artwork policy.
    pd.testing.assert_frame_equal(
        runs[0].drop(columns="artwork_variant_id"), baseline.drop(columns="artwork_variant_id")
    )
    manifest = json.loads(manifest_path(tmp_path / "ts0.parquet").read_text())
    assert manifest["artwork"] == {"policy": "ts", "rule": "best posterior mean, no exploration"}


def test_progress_logs_lines_when_not_a_terminal() -> None:
    stream = io.StringIO()
    progress = Progress(100, "user", "export", stream=stream, log_every_s=0.0)
    progress.update(40)
    progress.update(60)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("export: 40/100 users (40.0%)")
    assert "users/s" in lines[0] and "ETA" in lines[0]
    assert lines[1].startswith("export: 100/100 users (100.0%)")
    quiet = io.StringIO()
    silent = Progress(10, "user", "export", stream=quiet, log_every_s=0.0, enabled=False)
    silent.update(10)
    assert quiet.getvalue() == ""
