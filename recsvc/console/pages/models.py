"""Models page: published bundle versions, their manifest metrics, which one each server
serves; promote/roll back (validated like a hot swap, then the atomic ``current`` flip)
and retention of old versions."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from recsvc.bundle import MANIFEST, BundleError, list_versions, resolve_current, set_current
from recsvc.errors import UsageError

# Versions a retention run never deletes, besides `current` and experiment pins.
MIN_KEEP = 1
DELETING_PREFIX = ".tmp-deleting-"  # publish's temp prefix: loaders and listings skip it


def _manifest(root: Path, version: str) -> dict[str, Any]:
    try:
        data = json.loads((root / version / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return {"_error": f"{root / version / MANIFEST}: unreadable ({exc})"}
    return data if isinstance(data, dict) else {"_error": "manifest is not an object"}


def _flat(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        out: list[tuple[str, Any]] = []
        for k, v in value.items():
            out += _flat(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    return [(prefix, value)]


def current_version(root: Path) -> str | None:
    try:
        return resolve_current(root).name
    except BundleError:
        return None


def summary(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest numbers an operator compares: quality vs baselines, the cold-start
    choice, index recall and stage times."""
    model = manifest.get("model") or {}
    candidates = manifest.get("candidates") or {}
    choice = candidates.get("region_source_choice") or {}
    index = manifest.get("index") or {}
    stages = manifest.get("stages") or {}
    return {
        "created": manifest.get("created", ""),
        "model": model.get("name", ""),
        "reason": model.get("reason", ""),
        "metrics": [(k, v) for k, v in _flat(manifest.get("metrics") or {}) if v is not None],
        "cold_start": {
            "source": choice.get("source") or candidates.get("region_source", ""),
            "reason": choice.get("reason", ""),
        },
        "index": {
            "kind": index.get("kind", ""),
            "recall_at_10": index.get("recall_at_10"),
            "recall_target": index.get("recall_target"),
        },
        "stages": [
            (name, s.get("seconds"))
            for name, s in stages.items()
            if isinstance(s, dict) and s.get("seconds") is not None
        ],
        "total_seconds": manifest.get("total_seconds"),
        "counts": manifest.get("counts") or {},
        "error": manifest.get("_error", ""),
    }


def versions(root: Path, served: dict[str, str], pinned: set[str]) -> dict[str, Any]:
    """Every version newest first; ``served`` maps server -> version it reports."""
    current = current_version(root)
    rows = []
    for version in reversed(list_versions(root)):
        rows.append(
            {
                "version": version,
                "current": version == current,
                "servers": sorted(s for s, v in served.items() if v == version),
                "pinned": version in pinned,
                **summary(_manifest(root, version)),
            }
        )
    return {"current": current, "versions": rows}


def validate(root: Path, version: str) -> None:
    """What a server's hot swap does before it serves a bundle: load (checksums, shapes),
    derive the serving tables and smoke-test recommendations. Raises on anything wrong."""
    if version not in list_versions(root):
        raise UsageError(f"no published version {version!r} under {root}")
    from recsvc.serving.hotswap import load_model

    try:
        load_model(root / version, "default")
    except Exception as exc:
        raise UsageError(f"version {version!r} refused: {exc}") from None


def make_current(root: Path, version: str) -> str | None:
    """Validate, then flip ``current`` atomically; returns the version it pointed at."""
    before = current_version(root)
    validate(root, version)
    set_current(root, version)
    return before


def retention_plan(root: Path, keep: int, pinned: set[str]) -> list[str]:
    """Versions a retention run keeping the ``keep`` newest would delete (never ``current``
    nor a version a running experiment pins)."""
    if keep < MIN_KEEP:
        raise UsageError(f"keep must be >= {MIN_KEEP}")
    current = current_version(root)
    ordered = list_versions(root)
    newest = set(ordered[-keep:])
    return [v for v in ordered if v not in newest and v != current and v not in pinned]


def delete_versions(root: Path, doomed: list[str]) -> list[str]:
    """Rename each to a dot name first (listings and loaders stop seeing it at once), then
    remove it."""
    deleted = []
    for version in doomed:
        if version not in list_versions(root) or version == current_version(root):
            continue
        hidden = root / f"{DELETING_PREFIX}{version}-{os.getpid()}"
        os.rename(root / version, hidden)
        shutil.rmtree(hidden, ignore_errors=True)
        deleted.append(version)
    return deleted
