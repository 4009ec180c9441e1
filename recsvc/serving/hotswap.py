"""The live model and its hot swap.

``ModelHolder.model`` is a plain attribute: a call reads it once and uses that model to
the end, so a swap (one assignment, atomic under the GIL) never mixes two bundles in one
answer. The watcher polls ``<root>/current``; a new target is loaded, derived and
smoke-tested in a worker thread, off the request path. A bundle that fails any of that is
refused: the old one keeps serving, the refusal is logged and counted, and the same
target is not retried until ``current`` changes again.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from recsvc.bundle import CURRENT, list_versions, load_bundle, resolve_current
from recsvc.pipeline import ServingModel, UserInput, build_model, recommend
from recsvc.serving.metrics import ServingMetrics

log = logging.getLogger("recsvc.serving.hotswap")
_MAX_EXTRA_VERSIONS = 2  # bundles kept for experiment variants pinned to a model_version


def load_model(
    path: Path, policy_name: str, policy_params: Mapping[str, Mapping[str, Any]] | None = None
) -> ServingModel:
    """Load, derive and smoke-test one bundle version; raises on anything wrong (including
    parameters in ``policy_params`` that a policy does not take)."""
    model = build_model(load_bundle(path), policy_params=policy_params)
    for name in {policy_name, *(policy_params or {})}:
        model.policy(name)
    bundle = model.bundle
    probes = [UserInput(user_id="")]
    if len(bundle.user_ids):
        probes.append(UserInput(user_id=str(bundle.user_ids[0])))
    if len(bundle.region_names):
        probes.append(UserInput(user_id="", region=str(bundle.region_names[0])))
    for rec in recommend(model, probes, k=min(10, model.n_items)):
        if model.n_items and not rec.item_ids:
            raise ValueError(f"smoke test: no recommendations for user {rec.user_id!r}")
    return model


def freeze_heap() -> None:
    """Take what is alive now (the served models) out of the cyclic collector's sight.

    A bundle is ~10^5 long-lived Python objects (ids, names, default artwork decisions); a
    full collection walks them all, ~40 ms on the 100k-item benchmark bundle, which lands
    on whichever call is running (a p99 spike). Frozen objects are still freed by
    reference counting; unfreezing first lets a swapped-out model's cycles be collected.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class ModelHolder:
    """Holds the served model; ``watch()`` swaps it when ``<root>/current`` moves."""

    def __init__(
        self,
        root: Path,
        policy_name: str,
        metrics: ServingMetrics,
        loader: Callable[[Path, str], ServingModel] = load_model,
    ) -> None:
        self.root = Path(root)
        self.policy_name = policy_name
        self.metrics = metrics
        self._loader = loader
        self._refused: Path | None = None
        try:
            self.path = resolve_current(self.root)
            self.model = loader(self.path, policy_name)
        except Exception as exc:
            self.path, self.model = self._newest_valid(exc)
        freeze_heap()
        self._extra: dict[str, ServingModel] = {}
        self._loading: set[str] = set()
        metrics.set_model_version(self.model.version)
        metrics.swaps.labels("ok")
        metrics.swaps.labels("refused")
        log.info("serving bundle", extra={"version": self.model.version, "path": str(self.path)})

    def _newest_valid(self, error: Exception) -> tuple[Path, ServingModel]:
        """A start with an unusable ``current`` serves the newest version that loads rather
        than crash-looping; ``current`` itself is left as it is (an operator's to fix) and
        not retried until it moves. Raises ``error`` when no version loads."""
        link = self.root / CURRENT
        broken = link.resolve() if link.is_symlink() else link
        for name in reversed(list_versions(self.root)):
            path = self.root / name
            if path == broken:
                continue
            try:
                model = self._loader(path, self.policy_name)
            except Exception as exc:
                log.error("version %s not loadable either: %s", name, exc)
                continue
            self._refused = broken
            self.metrics.bundle_fallbacks.inc()
            log.error(
                "current bundle unusable; serving the newest valid version",
                extra={"current": str(broken), "serving": name, "error": str(error)},
            )
            return path, model
        raise error

    async def check_once(self) -> bool:
        """Swap if ``current`` points somewhere new; True if a swap happened."""
        try:
            target = resolve_current(self.root)
        except Exception as exc:  # current missing/broken: keep serving what we have
            if self._refused is None:
                log.warning("current is unreadable; keeping %s: %s", self.model.version, exc)
            return False
        if target in (self.path, self._refused):
            return False
        started = time.perf_counter()
        try:
            model = await asyncio.to_thread(self._loader, target, self.policy_name)
        except Exception as exc:
            self._refused = target
            self.metrics.swaps.labels("refused").inc()
            log.error(
                "bundle refused; old one keeps serving",
                extra={"path": str(target), "serving": self.model.version, "error": str(exc)},
            )
            return False
        old = self.model.version
        self.model, self.path, self._refused = model, target, None
        freeze_heap()
        self.metrics.set_model_version(model.version)
        self.metrics.swaps.labels("ok").inc()
        log.info(
            "bundle swapped",
            extra={"from": old, "to": model.version, "load_s": time.perf_counter() - started},
        )
        return True

    async def watch(
        self, interval_s: float, pinned: Callable[[], Iterable[str]] | None = None
    ) -> None:
        """Swap on ``current`` changes; preload the versions ``pinned()`` names (experiment
        variants) so their first calls are not answered by the current model."""
        while True:
            if pinned is not None:
                for name in pinned():
                    self.version(name)
            await asyncio.sleep(interval_s)
            await self.check_once()

    def version(self, name: str) -> ServingModel | None:
        """Model ``name`` for an experiment variant; loads it lazily in the background and
        answers None (caller uses the current model) until it is ready."""
        if name == self.model.version:
            return self.model
        found = self._extra.get(name)
        if found is None and name not in self._loading:
            self._loading.add(name)
            asyncio.get_running_loop().create_task(self._load_extra(name))
        return found

    async def _load_extra(self, name: str) -> None:
        try:
            model = await asyncio.to_thread(self._loader, self.root / name, self.policy_name)
        except Exception as exc:
            log.error("experiment model_version %r not loadable: %s", name, exc)
            return  # stays in _loading: not retried on every call
        while len(self._extra) >= _MAX_EXTRA_VERSIONS:
            self._extra.pop(next(iter(self._extra)))
        self._extra[name] = model
        self._loading.discard(name)
        freeze_heap()
