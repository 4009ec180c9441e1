"""Atomic publish and the ``current`` flip.

A version is built in ``<root>/.tmp-<version>-<pid>`` (a dot name: :func:`list_versions` and
loaders ignore it), every file and the directory are fsynced, the directory is renamed to
``<root>/<version>``, and ``current`` — a *relative* symlink to the version name — is replaced
with ``os.replace`` of a freshly made temp link (rename(2) is atomic, so a reader sees either
the old or the new target, never neither). A crash at any point leaves ``current`` and earlier
versions as they were; the leftover temp directory is removed by the next publish.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from recsvc.bundle.errors import BundleError
from recsvc.bundle.files import fsync_dir, fsync_file
from recsvc.bundle.format import CURRENT, MANIFEST, TMP_PREFIX
from recsvc.bundle.versions import new_version

_LOCK = ".publish.lock"


def publish(
    root: Path,
    build_fn: Callable[[Path, str], Any],
    *,
    fingerprint: str = "",
    make_current: bool = True,
) -> str:
    """Build a new version with ``build_fn(temp_dir, version)`` and publish it atomically.

    Returns the version name. If ``build_fn`` raises (or the process dies), nothing under
    ``root`` changes except a dot-named temp dir, which the next publish removes.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(root)
    version = new_version(fingerprint)
    tmp = root / f"{TMP_PREFIX}{version}-{os.getpid()}"
    tmp.mkdir()
    try:
        build_fn(tmp, version)
        if not (tmp / MANIFEST).is_file():
            raise BundleError(f"{tmp}: build wrote no {MANIFEST}")
        for path in tmp.iterdir():
            fsync_file(path)
        fsync_dir(tmp)
        with _publish_lock(root):
            os.rename(tmp, root / version)
            fsync_dir(root)
            if make_current:
                set_current(root, version)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return version


def set_current(root: Path, version: str) -> None:
    """Point ``<root>/current`` at ``version`` atomically (also used for rollback)."""
    root = Path(root)
    if not (root / version / MANIFEST).is_file():
        raise BundleError(f"{root / version}: not a published version")
    tmp_link = root / f"{TMP_PREFIX}current-{time.monotonic_ns()}-{os.getpid()}"
    os.symlink(version, tmp_link)
    try:
        os.replace(tmp_link, root / CURRENT)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_link.unlink()
        raise
    fsync_dir(root)


@contextlib.contextmanager
def _publish_lock(root: Path) -> Iterator[None]:
    """Serializes the rename + flip of concurrent publishers (released if the process dies)."""
    with open(root / _LOCK, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _remove_stale_temps(root: Path) -> None:
    """Delete temp dirs/links left by dead publishers (a live one's pid is still running)."""
    for path in root.iterdir():
        if not path.name.startswith(TMP_PREFIX):
            continue
        pid = _pid_of(path.name)
        if pid is not None and pid != os.getpid() and _alive(pid):
            continue
        if path.is_symlink() or path.is_file():
            path.unlink(missing_ok=True)
        else:
            shutil.rmtree(path, ignore_errors=True)


def _pid_of(name: str) -> int | None:
    """Temp names end in ``-<pid>`` (see publish and set_current)."""
    last = name.rsplit("-", 1)[-1]
    return int(last) if last.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
