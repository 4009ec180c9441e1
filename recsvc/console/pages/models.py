"""Models page: published bundle versions, their manifest metrics, which one each server
serves; promote/roll back and retention of old versions. The logic is
``recsvc.bundle.retention`` (shared with ``recsvc bundles``); this page adds the hot-swap
validation a server would run before serving a version."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recsvc.bundle import retention


def current_version(root: Path) -> str | None:
    return retention.current_version(root)


def versions(root: Path, served: dict[str, str], pinned: set[str]) -> dict[str, Any]:
    """Every version newest first; ``served`` maps server -> version it reports."""
    return retention.list_summaries(root, served, pinned)


def serving_check(path: Path) -> None:
    """What a server's hot swap does before it serves a bundle: load (checksums, shapes),
    derive the serving tables and smoke-test recommendations."""
    from recsvc.serving.hotswap import load_model

    load_model(path, "default")


def validate(root: Path, version: str) -> None:
    retention.validate(root, version, serving_check)


def make_current(root: Path, version: str) -> str | None:
    """Validate, then flip ``current`` atomically; returns the version it pointed at."""
    return retention.promote(root, version, serving_check)


def retention_plan(root: Path, keep: int, pinned: set[str]) -> list[str]:
    """Versions a retention run keeping the ``keep`` newest would delete (never ``current``
    nor a version a running experiment pins)."""
    return retention.prune_plan(root, keep, pinned)


def delete_versions(root: Path, doomed: list[str], pinned: set[str] | None = None) -> list[str]:
    return retention.delete_versions(root, doomed, pinned or ())
