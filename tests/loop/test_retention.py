"""recsvc bundles list|promote|rollback|prune on hand-made bundles (real files, real
validation), and a server that starts while current is corrupt."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from recsvc.bundle import MANIFEST, list_versions, resolve_current, retention, set_current
from recsvc.cli import main
from recsvc.errors import UsageError
from recsvc.v1 import recommender_pb2 as pb
from tests.serving.bundle_factory import publish_bundle


def _corrupt(root: Path, version: str) -> None:
    """Flip bytes of an array file the manifest checksums (load_bundle must refuse it)."""
    target = next(p for p in sorted((root / version).glob("*.npy")))
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))


def _mark_refused(root: Path, version: str) -> None:
    path = root / version / MANIFEST
    manifest = json.loads(path.read_text())
    manifest["promotion"] = {"decision": "refused", "reason": "test"}
    path.write_text(json.dumps(manifest))


def _versions(root: Path, n: int) -> list[str]:
    out = []
    for seed in range(n):
        out.append(publish_bundle(root, seed=seed))
        time.sleep(0.002)  # distinct, ordered version names
    return out


def test_promote_validates_then_flips_and_refuses_corrupt(tmp_path: Path, capsys) -> None:
    root = tmp_path / "b"
    v0, v1, v2 = _versions(root, 3)
    assert resolve_current(root).name == v2
    assert main(["bundles", "promote", v0, "--artifacts", str(root)]) == 0
    assert resolve_current(root).name == v0
    _corrupt(root, v1)
    assert main(["bundles", "promote", v1, "--artifacts", str(root)]) == 2
    err = capsys.readouterr().err
    assert f"version {v1!r} refused" in err and len(err.strip().splitlines()) == 1
    assert resolve_current(root).name == v0  # unchanged
    assert main(["bundles", "promote", "nope", "--artifacts", str(root)]) == 2
    assert "no published version 'nope'" in capsys.readouterr().err


def test_rollback_skips_refused_and_broken_versions(tmp_path: Path, capsys) -> None:
    root = tmp_path / "b"
    v0, v1, v2, v3 = _versions(root, 4)
    _mark_refused(root, v2)  # the gate kept it from current
    _corrupt(root, v1)
    assert main(["bundles", "rollback", "--artifacts", str(root)]) == 0
    out = capsys.readouterr()
    assert resolve_current(root).name == v0
    assert f"{v3} -> {v0}" in out.out
    assert v2 in out.err and v1 in out.err  # each skipped one named
    assert main(["bundles", "rollback", "--artifacts", str(root)]) == 2
    assert "no valid version older than" in capsys.readouterr().err
    assert resolve_current(root).name == v0


def test_prune_never_touches_current_or_pinned(tmp_path: Path) -> None:
    root = tmp_path / "b"
    versions = _versions(root, 6)
    set_current(root, versions[1])
    plan = retention.prune_plan(root, keep=2, pinned={versions[0]})
    assert plan == [versions[2], versions[3]]
    deleted = retention.delete_versions(root, [*plan, versions[1]], pinned={versions[0]})
    assert deleted == [versions[2], versions[3]]
    assert list_versions(root) == [versions[0], versions[1], versions[4], versions[5]]
    assert resolve_current(root).name == versions[1]
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp-")]
    with pytest.raises(UsageError, match="keep must be >= 1"):
        retention.prune_plan(root, keep=0)


def test_prune_cli_keeps_a_version_an_experiment_pins(tmp_path: Path, capsys) -> None:
    root = tmp_path / "b"
    versions = _versions(root, 4)
    store = f"sqlite:///{tmp_path / 'store.sqlite'}"
    spec = tmp_path / "exp.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "pinned-model",
                "salt": "pinned-model-1",
                "traffic": 1.0,
                "variants": [
                    {"name": "control", "weight": 0.5},
                    {"name": "old", "weight": 0.5, "overrides": {"model_version": versions[0]}},
                ],
            }
        )
    )
    create = ["experiments", "create", "--file", str(spec), "--feature-store", store]
    assert main([*create, "--artifacts", str(root)]) == 0, capsys.readouterr().err
    capsys.readouterr()
    args = ["bundles", "prune", "--keep", "1", "--artifacts", str(root), "--feature-store", store]
    assert main([*args, "--dry-run"]) == 0
    assert capsys.readouterr().out.strip() == (
        f"would delete 2 version(s): {versions[1]}, {versions[2]}"
    )
    assert main(args) == 0
    assert list_versions(root) == [versions[0], versions[3]]
    assert main(["bundles", "prune", "--keep", "0", "--artifacts", str(root)]) == 2


def test_list_json_shows_current_and_promotion(tmp_path: Path, capsys) -> None:
    root = tmp_path / "b"
    v0, v1 = _versions(root, 2)
    _mark_refused(root, v0)
    assert main(["bundles", "list", "--artifacts", str(root), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["current"] == v1
    assert [r["version"] for r in data["versions"]] == [v1, v0]
    assert data["versions"][1]["promotion"]["decision"] == "refused"


def test_server_starts_on_newest_valid_version_when_current_is_corrupt(
    tmp_path: Path, start_server, stub_for, caplog
) -> None:
    root = tmp_path / "b"
    v0, v1, v2 = _versions(root, 3)
    _corrupt(root, v2)  # current
    _corrupt(root, v1)
    with caplog.at_level("ERROR", logger="recsvc.serving.hotswap"):
        server = start_server(root)
    reply = stub_for(server).Recommend(pb.RecommendRequest(user_id="u001", k=5), timeout=10)
    assert reply.model_version == v0
    assert resolve_current(root).name == v2  # left for the operator
    registry = server.servicer.metrics.registry
    assert registry.get_sample_value("recsvc_bundle_fallback_total") == 1
    assert any("current bundle unusable" in r.getMessage() for r in caplog.records)
