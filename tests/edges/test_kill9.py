"""SIGKILL at seeded points of train (with its publish), export, audience and materialize:
no partial output is visible afterwards, and the next run succeeds.

Each command runs once to completion to time it, then is killed at fractions of that time
drawn from a seeded generator (the import phase included: a kill may land before any
work, during it, or after the end, and every case must leave a consistent state). Small
data and fast training flags keep the whole module to ~1-2 minutes."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from recsvc.bundle import list_versions, load_bundle
from recsvc.bundle.files import sha256_file

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
KILLS = 3  # kill points per command
FAST_TRAIN = ["--model", "als", "--no-tune", "--no-hybrid", "--no-lowrank-ease",
              "--factors", "8", "--iterations", "3", "--quiet"]  # fmt: skip


def _argv(*args: object) -> list[str]:
    return [sys.executable, "-m", "recsvc.cli", *map(str, args)]


def _run(*args: object) -> float:
    """Run to completion (must succeed); seconds it took."""
    started = time.monotonic()
    done = subprocess.run(_argv(*args), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return time.monotonic() - started


def _kill_at(delay: float, *args: object) -> bool:
    """Start the command, SIGKILL it after ``delay`` s; True if it was still running."""
    proc = subprocess.Popen(
        _argv(*args), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        return True


def _delays(seed: int, full_s: float) -> list[float]:
    rng = random.Random(seed)
    return sorted(full_s * rng.uniform(0.3, 1.0) for _ in range(KILLS))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("kill9") / "data"
    _run("demo-data", "--out", out, "--users", 150, "--items", 60, "--seed", 5)
    return out


@pytest.fixture(scope="module")
def trained(data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    root = tmp_path_factory.mktemp("kill9-bundles")
    return root, _run("train", "--data", data, "--out", root, *FAST_TRAIN)


def _visible(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))


def test_train_and_publish(data: Path, trained: tuple[Path, float]) -> None:
    root, full_s = trained
    killed = 0
    for delay in _delays(11, full_s):
        before = list_versions(root)
        killed += _kill_at(delay, "train", "--data", data, "--out", root, *FAST_TRAIN)
        # Every visible entry is `current` or a complete, checksum-valid version, and
        # current points at one of them (a kill never leaves a half version visible).
        versions = list_versions(root)
        assert set(_visible(root)) == {"current", *versions}
        assert set(before) <= set(versions)
        for version in versions:
            load_bundle(root / version, verify_checksums=True)
        assert (root / "current").resolve().name in versions
    assert killed >= 1  # at least one kill landed mid-run
    _run("train", "--data", data, "--out", root, *FAST_TRAIN)
    load_bundle(root, verify_checksums=True)


def _complete(out: Path) -> bool:
    """No output, or the output its manifest describes (rows, checksum)."""
    if not out.exists():
        return False
    manifest = out.with_name(out.name + ".manifest.json")
    if manifest.exists():
        doc = json.loads(manifest.read_text())
        assert doc["output"]["sha256"] == sha256_file(out)
    # The rename happens only after the whole file is written and fsynced: readable.
    pd.read_csv(out)
    return True


@pytest.mark.parametrize("command", ["export", "audience"])
def test_export_and_audience(trained: tuple[Path, float], tmp_path: Path, command: str) -> None:
    root, _ = trained
    out = tmp_path / f"{command}.csv"
    what = ["--k", 10] if command == "export" else ["--top", 20, "--item-filter",
                                                   'category != "zzz"']  # fmt: skip
    args = [command, "--artifacts", root, "--out", out, *what, "--feature-store", "none",
            "--no-progress", "--allow-empty"]  # fmt: skip
    full_s = _run(*args)
    out.unlink()
    out.with_name(out.name + ".manifest.json").unlink()
    for delay in _delays(23, full_s):
        _kill_at(delay, *args)
        _complete(out)
        assert _visible(tmp_path) in ([], [out.name], [out.name, out.name + ".manifest.json"])
    _run(*args)
    assert _complete(out)


def test_materialize(data: Path, tmp_path: Path) -> None:
    store = tmp_path / "store.sqlite"
    url = f"sqlite:///{store}"
    args = ["materialize", "--data", data, "--feature-store", url, "--batch-size", 20, "--quiet"]
    full_s = _run(*args)
    store.unlink()
    for delay in _delays(37, full_s):
        _kill_at(delay, *args)
    _run(*args)  # upserts: a rerun after any kill completes the store
    from feature_store.factory import open_store

    opened = open_store(url)
    try:
        users = pd.read_csv(data / "users.csv", dtype=str)
        state, _ = opened.read_user(str(users.user_id.iloc[-1]))
        assert state.profile  # the last batch is there
        items = pd.read_csv(data / "items.csv", dtype=str)
        assert opened.get_item_attributes([str(items.item_id.iloc[-1])])
    finally:
        opened.close()
