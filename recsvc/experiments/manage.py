"""Creating, listing and stopping stored experiments: one code path for the CLI and console.

``recsvc experiments create|list|stop`` and the operator console both call these, so a
definition refused by one is refused by the other with the same message.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import UTC, datetime
from pathlib import Path

from feature_store.base import OnlineStore
from recsvc.errors import UsageError
from recsvc.experiments.definition import (
    Experiment,
    ExperimentDefinitionError,
    check_against_stored,
    check_overrides,
    check_segment,
    parse_experiment,
)
from recsvc.experiments.report import load_definition
from recsvc.experiments.router import NAMESPACE


def stored_experiments(
    store: OnlineStore, on_invalid: Callable[[str], None] | None = None
) -> dict[str, Experiment]:
    """Every stored definition that still validates (others go to ``on_invalid``)."""
    out = {}
    for name, doc in store.list_documents(NAMESPACE).items():
        try:
            out[name] = parse_experiment(doc, f"stored experiment {name!r}")
        except ExperimentDefinitionError as exc:
            if on_invalid is not None:
                on_invalid(str(exc))
    return out


def experiment_state(experiment: Experiment, now: datetime | None = None) -> str:
    """running, stopped, scheduled (before ``start``) or ended (after ``stop``)."""
    now = now or datetime.now(UTC)
    if experiment.status == "stopped":
        return "stopped"
    if experiment.start is not None and now < experiment.start:
        return "scheduled"
    if experiment.stop is not None and now >= experiment.stop:
        return "ended"
    return "running"


def policy_names() -> list[str]:
    from recsvc.bandit.registry import policy_names as names

    return names()


# The request carries the user's region on every call: a segment may test it whatever
# features the bundle holds.
REQUEST_FIELDS = frozenset({"region"})


def segment_fields(root: Path | None) -> set[str] | None:
    """What a segment may test: the current bundle's user features and the request's
    ``region``. None (not known) without a root or a current bundle."""
    from recsvc.bundle import BundleError, load_bundle, resolve_current

    if root is None:
        return None
    try:
        resolve_current(root)
    except BundleError:
        return None
    bundle = load_bundle(root, verify_checksums=False, map_user_arrays=True)
    return {*bundle.user_features, *REQUEST_FIELDS}


def unverifiable_fields(
    experiment: Experiment, known_fields: Collection[str] | None, source: str = "experiment"
) -> list[str]:
    """The fields the segment names that nothing vouches for: none when ``known_fields``
    is given (:func:`check_segment` then refuses a field outside it), else every field but
    :data:`REQUEST_FIELDS`. A caller refuses them unless told to store them unchecked."""
    if experiment.segment is None or known_fields is not None:
        return []
    from recsvc.segments import parse_segment

    check_segment(experiment, source)  # a syntax error is reported as create reports it
    return sorted(parse_segment(experiment.segment).fields - REQUEST_FIELDS)


def prepare_experiment(
    store: OnlineStore,
    experiment: Experiment,
    *,
    source: str,
    model_versions: Collection[str] | None,
    known_fields: Collection[str] | None = None,
    replace: bool = False,
    on_invalid: Callable[[str], None] | None = None,
    allow_unchecked_segment: bool = False,
    no_fields_because: str = "no bundle to read user features from",
) -> Experiment:
    """Every check ``create`` makes; returns the definition as it would be stored.

    ``known_fields`` None (no bundle: ``no_fields_because`` says why) refuses a segment
    naming any field but :data:`REQUEST_FIELDS`, unless ``allow_unchecked_segment``."""
    unchecked = unverifiable_fields(experiment, known_fields, source)
    if unchecked and not allow_unchecked_segment:
        raise ExperimentDefinitionError(
            f"{source}: field 'segment': user feature {unchecked[0]!r} cannot be checked "
            f"({no_fields_because}); give the bundle root the servers load with "
            "--artifacts ROOT, or store it unchecked with --allow-unchecked-segment"
        )
    check_segment(experiment, source, known_fields)
    check_overrides(experiment, policy_names(), model_versions, source)
    placed = check_against_stored(
        experiment, stored_experiments(store, on_invalid), replace=replace, source=source
    )
    placed = placed.model_copy(
        update={"created_at": datetime.now(UTC), "status": "running", "stopped_at": None}
    )
    parse_experiment(placed.to_document(), source)  # what the routers will read back
    return placed


def store_experiment(store: OnlineStore, placed: Experiment) -> None:
    store.put_document(NAMESPACE, placed.name, placed.to_document())


def stop_experiment(store: OnlineStore, name: str) -> tuple[Experiment, bool]:
    """Stop ``name``; returns the definition and whether it was running before."""
    experiment = load_definition(store, name)
    if experiment.status == "stopped":
        return experiment, False
    stopped = experiment.model_copy(update={"status": "stopped", "stopped_at": datetime.now(UTC)})
    store.put_document(NAMESPACE, stopped.name, stopped.to_document())
    return stopped, True


def model_versions_under(root: Path | None) -> list[str] | None:
    """Published versions under ``root`` (None: not checked)."""
    if root is None:
        return None
    if not Path(root).is_dir():
        raise UsageError(f"--artifacts {root}: not a directory")
    from recsvc.bundle import list_versions

    return list_versions(root)
