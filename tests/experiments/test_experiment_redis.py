"""Definitions in a real Redis store are seen by every router (replica) sharing it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from feature_store.factory import open_store
from recsvc.cli import main
from recsvc.experiments.router import ExperimentRouter

pytestmark = pytest.mark.redis


def test_cli_and_routers_share_definitions_through_redis(
    tmp_path: Path, redis_server_url: str, redis_prefix: str, capsys
) -> None:
    url = f"{redis_server_url}?prefix={redis_prefix}"
    spec = {
        "name": "shared",
        "salt": "shared-1",
        "variants": [{"name": "a", "weight": 0.5}, {"name": "b", "weight": 0.5}],
    }
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    assert main(["experiments", "create", "--file", str(path), "--feature-store", url]) == 0
    replicas = [open_store(url), open_store(url)]
    try:
        routers = [ExperimentRouter(s, background=False) for s in replicas]
        for i in range(200):
            got = [r.assign(f"u{i}", {}) for r in routers]
            assert got[0] is not None and got[0] == got[1]
        assert main(["experiments", "stop", "shared", "--feature-store", url]) == 0
        for r in routers:
            r.refresh()
            assert r.assign("u1", {}) is None
    finally:
        for s in replicas:
            s.close()
    capsys.readouterr()
