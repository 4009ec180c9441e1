"""Version names, the published versions under a root, and what ``current`` points at."""

from __future__ import annotations

import hashlib
import os
import re
from datetime import UTC, datetime
from pathlib import Path

from recsvc.bundle.errors import BundleError
from recsvc.bundle.format import CURRENT, MANIFEST

_VERSION_RE = re.compile(r"^\d{8}T\d{6}\d{6}Z-[0-9a-z]{8}$")


def new_version(fingerprint: str = "", now: datetime | None = None) -> str:
    """Sortable version name: UTC time to the microsecond + 8 hex chars of a fingerprint."""
    now = now or datetime.now(UTC)
    tag = hashlib.sha256(f"{fingerprint}|{now.isoformat()}|{os.getpid()}".encode()).hexdigest()[:8]
    return now.strftime("%Y%m%dT%H%M%S%fZ") + "-" + tag


def list_versions(root: Path) -> list[str]:
    """Published versions under ``root``, oldest first (temp dirs and ``current`` excluded)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(
        p.name
        for p in root.iterdir()
        if _VERSION_RE.match(p.name) and p.is_dir() and not p.is_symlink()
    )


def resolve_current(root: Path) -> Path:
    """The version directory ``<root>/current`` points at (BundleError when there is none)."""
    root = Path(root)
    link = root / CURRENT
    if not link.is_symlink() and not link.exists():
        raise BundleError(f"{link}: no current bundle (run `recsvc train --out {root}` first)")
    target = link.resolve()
    if not (target / MANIFEST).is_file():
        raise BundleError(f"{link}: points at {target}, which is not a bundle")
    return target
