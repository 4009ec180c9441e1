"""Published versions as an operator sees them: list with manifest summaries, promote
(validate, then the atomic ``current`` flip), roll back, and retention (prune old versions).

One implementation for ``recsvc bundles`` and the console's models page. Validation is the
caller's: this package is the bottom layer and cannot import the serving code, so callers
pass ``validate(path)`` — the server's hot-swap load + smoke test
(``recsvc.serving.hotswap.load_model``) — and a version is made current only after it
passed. Without a validator, :func:`load_bundle` (checksums, shapes, dtypes) is the check.

Retention never deletes ``current`` nor a version an experiment pins, and keeps at least
:data:`MIN_KEEP` versions. A deleted version is first renamed to a dot name (listings and
loaders stop seeing it at once), then removed.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from recsvc.bundle.errors import BundleError
from recsvc.bundle.format import MANIFEST, TMP_PREFIX
from recsvc.bundle.publish import set_current
from recsvc.bundle.read import load_bundle
from recsvc.bundle.versions import list_versions, resolve_current
from recsvc.errors import UsageError

MIN_KEEP = 1
# publish's temp prefix: publish removes leftovers of a dead process, loaders skip them.
DELETING_PREFIX = f"{TMP_PREFIX}deleting-"
# manifest["promotion"]["decision"] values of a version that never became current by the
# gate's choice; rollback skips them (an operator can still promote one by name).
NOT_PROMOTED = ("refused", "never")

Validator = Callable[[Path], object]


def read_manifest(root: Path, version: str) -> dict[str, Any]:
    """The version's manifest, or ``{"_error": ...}`` when it cannot be read."""
    path = Path(root) / version / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return {"_error": f"{path}: unreadable ({exc})"}
    return data if isinstance(data, dict) else {"_error": f"{path}: not a JSON object"}


def current_version(root: Path) -> str | None:
    """Name of the version ``current`` points at, None when there is none or it is broken."""
    try:
        return resolve_current(Path(root)).name
    except BundleError:
        return None


def _flat(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        out: list[tuple[str, Any]] = []
        for k, v in value.items():
            out += _flat(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    return [(prefix, value)]


def summary(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest numbers an operator compares: quality vs baselines, the cold-start
    choice, index recall, stage times and the promotion gate's decision."""
    model = manifest.get("model") or {}
    candidates = manifest.get("candidates") or {}
    choice = candidates.get("region_source_choice") or {}
    index = manifest.get("index") or {}
    stages = manifest.get("stages") or {}
    promotion = manifest.get("promotion") or {}
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
        "training_data": manifest.get("training_data") or {},
        "promotion": {
            "decision": promotion.get("decision", ""),
            "reason": promotion.get("reason", ""),
            "candidate": promotion.get("candidate") or {},
            "current": promotion.get("current", ""),
            "current_scores": promotion.get("current_scores") or {},
        },
        "error": manifest.get("_error", ""),
    }


def list_summaries(
    root: Path,
    served: dict[str, str] | None = None,
    pinned: Collection[str] = (),
) -> dict[str, Any]:
    """Every version newest first with its summary; ``served`` maps server -> version."""
    root = Path(root)
    served = served or {}
    current = current_version(root)
    rows = []
    for version in reversed(list_versions(root)):
        rows.append(
            {
                "version": version,
                "current": version == current,
                "servers": sorted(s for s, v in served.items() if v == version),
                "pinned": version in pinned,
                **summary(read_manifest(root, version)),
            }
        )
    return {"current": current, "versions": rows}


def validate(root: Path, version: str, validator: Validator | None = None) -> None:
    """Raise :class:`UsageError` unless ``version`` is published and passes ``validator``
    (default: :func:`load_bundle`, which checks checksums, shapes and dtypes)."""
    root = Path(root)
    if version not in list_versions(root):
        raise UsageError(f"no published version {version!r} under {root}")
    check = validator or (lambda path: load_bundle(path))
    try:
        check(root / version)
    except Exception as exc:
        raise UsageError(f"version {version!r} refused: {exc}") from None


def promote(root: Path, version: str, validator: Validator | None = None) -> str | None:
    """Validate, then flip ``current`` to ``version`` atomically; returns the version
    ``current`` pointed at before (None if none)."""
    before = current_version(root)
    validate(root, version, validator)
    set_current(Path(root), version)
    return before


def was_refused(manifest: dict[str, Any]) -> bool:
    """Whether the promotion gate (or ``--promote never``) kept this version from current."""
    decision = (manifest.get("promotion") or {}).get("decision")
    return decision in NOT_PROMOTED


def rollback_target(root: Path, validator: Validator | None = None) -> tuple[str, list[str]]:
    """The previous valid version: the newest one older than ``current`` that the gate did
    not refuse and that validates. Returns it and the ``version: why`` of each one skipped.
    Without a readable ``current``, the newest valid version is the target."""
    root = Path(root)
    current = current_version(root)
    ordered = list_versions(root)
    older = [v for v in ordered if current is None or v < current]
    skipped = []
    for version in reversed(older):
        if was_refused(read_manifest(root, version)):
            skipped.append(f"{version}: refused by the promotion gate")
            continue
        try:
            validate(root, version, validator)
        except UsageError as exc:
            skipped.append(f"{version}: {exc}")
            continue
        return version, skipped
    what = f"older than {current}" if current else "under " + str(root)
    detail = f" ({'; '.join(skipped)})" if skipped else ""
    raise UsageError(f"no valid version {what} to roll back to{detail}")


def rollback(root: Path, validator: Validator | None = None) -> tuple[str | None, str]:
    """Point ``current`` at :func:`rollback_target`; returns (before, after)."""
    target, _ = rollback_target(root, validator)
    before = current_version(root)
    set_current(Path(root), target)
    return before, target


def newest_valid(
    root: Path, validator: Validator | None = None, *, exclude: Collection[str] = ()
) -> tuple[str | None, list[str]]:
    """The newest version (not in ``exclude``) that validates, and ``version: why`` of each
    newer one that did not; (None, ...) when none does."""
    failures = []
    for version in reversed(list_versions(Path(root))):
        if version in exclude:
            continue
        try:
            validate(root, version, validator)
        except UsageError as exc:
            failures.append(str(exc))
            continue
        return version, failures
    return None, failures


def prune_plan(root: Path, keep: int, pinned: Collection[str] = ()) -> list[str]:
    """Versions a retention run keeping the ``keep`` newest would delete, oldest first:
    never ``current`` nor a pinned version."""
    if keep < MIN_KEEP:
        raise UsageError(f"keep must be >= {MIN_KEEP} (got {keep})")
    root = Path(root)
    current = current_version(root)
    ordered = list_versions(root)
    newest = set(ordered[-keep:])
    return [v for v in ordered if v not in newest and v != current and v not in pinned]


def delete_versions(root: Path, doomed: Collection[str], pinned: Collection[str] = ()) -> list[str]:
    """Delete each version of ``doomed`` (rechecked: never current or pinned at this
    moment); returns the ones deleted."""
    root = Path(root)
    deleted = []
    for version in doomed:
        if version not in list_versions(root) or version == current_version(root):
            continue
        if version in pinned:
            continue
        hidden = root / f"{DELETING_PREFIX}{version}-{os.getpid()}"
        os.rename(root / version, hidden)
        shutil.rmtree(hidden, ignore_errors=True)
        deleted.append(version)
    return deleted
