"""The server's view of running experiments: cached definitions, microsecond assignment.

Definitions live in the feature store (namespace ``experiments``) so every replica sees the
same ones. The router keeps a compiled copy in-process and refreshes it every
``refresh_seconds`` — in a daemon thread by default, or lazily on the calling thread when
``background=False`` — so ``create``/``stop`` take effect without a restart. When the store
is down the last good definitions stay in force; a stored document that no longer
validates is skipped (its last good version is kept) and logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from feature_store.base import OnlineStore
from recsvc.experiments.assignment import Assignment, CompiledExperiment, compile_experiment
from recsvc.experiments.definition import parse_experiment

NAMESPACE = "experiments"
log = logging.getLogger(__name__)


class ExperimentRouter:
    """``assign(user_id, features)`` for the Recommend path.

    Overrides dicts in the returned :class:`Assignment` are shared between calls: read them,
    do not mutate them.
    """

    def __init__(
        self,
        store: OnlineStore,
        refresh_seconds: float = 5.0,
        *,
        background: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._refresh_seconds = max(0.0, float(refresh_seconds))
        self._clock = clock
        self._docs: dict[str, dict[str, Any]] = {}
        self._compiled: dict[str, CompiledExperiment] = {}
        self._running: tuple[CompiledExperiment, ...] = ()
        self._lock = threading.Lock()
        self._next_refresh = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_refresh_ok: bool | None = None
        self.refresh()
        if background and self._refresh_seconds > 0:
            self._thread = threading.Thread(
                target=self._refresh_loop, name="experiment-refresh", daemon=True
            )
            self._thread.start()

    # -- hot path -----------------------------------------------------------------------------
    def assign_all(self, user_id: str, features: Mapping[str, str]) -> list[Assignment]:
        """Every running experiment the user is in, in creation order."""
        if self._thread is None and time.monotonic() >= self._next_refresh:
            self.refresh()
        now = self._clock()
        layer_buckets: dict[str, int] = {}
        out = []
        for experiment in self._running:
            if experiment.active(now):
                assignment = experiment.assign(user_id, features, layer_buckets)
                if assignment is not None:
                    out.append(assignment)
        return out

    def assign(self, user_id: str, features: Mapping[str, str]) -> Assignment | None:
        """The first running experiment the user is in (creation order), or None."""
        if self._thread is None and time.monotonic() >= self._next_refresh:
            self.refresh()
        now = self._clock()
        layer_buckets: dict[str, int] = {}
        for experiment in self._running:
            if experiment.active(now):
                assignment = experiment.assign(user_id, features, layer_buckets)
                if assignment is not None:
                    return assignment
        return None

    # -- definitions ----------------------------------------------------------------------------
    @property
    def experiments(self) -> list[str]:
        """Names of the running experiments the router currently knows."""
        return [e.name for e in self._running]

    def pinned_model_versions(self) -> set[str]:
        """Bundle versions that running experiments' variants pin (servers preload them)."""
        running = self._running
        return {
            str(a.overrides["model_version"])
            for experiment in running
            for a in experiment.assignments
            if a.overrides.get("model_version")
        }

    def refresh(self) -> bool:
        """Reload definitions from the store now; False (old ones kept) if it failed."""
        self._next_refresh = time.monotonic() + self._refresh_seconds
        try:
            docs = self._store.list_documents(NAMESPACE)
        except Exception as exc:  # store down: keep serving the last good definitions
            if self.last_refresh_ok is not False:
                log.warning("experiment definitions not refreshed (store: %s); keeping last", exc)
            self.last_refresh_ok = False
            return False
        with self._lock:
            self._apply(docs)
        self.last_refresh_ok = True
        return True

    def _apply(self, docs: dict[str, dict[str, Any]]) -> None:
        if docs == self._docs:
            return
        compiled: dict[str, CompiledExperiment] = {}
        for name, doc in docs.items():
            previous = self._compiled.get(name)
            if previous is not None and self._docs.get(name) == doc:
                compiled[name] = previous
                continue
            try:
                compiled[name] = compile_experiment(parse_experiment(doc, f"stored {name!r}"))
            except Exception as exc:  # one bad document must not take the others down
                log.error("experiment %r skipped: %s", name, exc)
                if previous is not None:
                    compiled[name] = previous
        self._docs = docs
        self._compiled = compiled
        running = [c for c in compiled.values() if c.definition.status == "running"]
        running.sort(key=lambda c: (_created(c), c.name))
        self._running = tuple(running)
        log.info("experiments running: %s", ", ".join(c.name for c in running) or "none")

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self._refresh_seconds):
            self.refresh()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> ExperimentRouter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _created(compiled: CompiledExperiment) -> float:
    created = compiled.definition.created_at
    return created.timestamp() if created is not None else 0.0
