"""What an experiment is: the pydantic model behind ``recsvc experiments create --file``.

An experiment file (YAML)::

    name: artwork-policy          # unique (case-insensitive) among stored experiments
    salt: artwork-policy-2026-11  # hashing salt; changing it reshuffles users
    traffic: 1.0                  # share of eligible users in the experiment
    segment: 'region in ("US-9", "CA")'   # optional, the export expression language
    holdout: 0.0                  # optional share of the experiment kept on defaults
    layer: ranking                # optional; see "Running several experiments" below
    start: 2026-11-22T00:00:00Z   # optional; stop likewise
    variants:
      - {name: control, weight: 0.5}
      - {name: contextual, weight: 0.5, overrides: {bandit_policy: lints}}

Running several experiments at once. Two ways, both deterministic:

- *Independent salts* (no ``layer``): each experiment hashes ``salt:user_id`` on its own,
  so a user can be in several experiments and the splits are statistically independent.
  Two stored experiments may therefore never share a salt (it would correlate them).
- *Mutually exclusive layers* (same ``layer`` name): the layer hashes ``layer:user_id``
  into 10,000 buckets and each experiment of the layer owns a disjoint range of them
  (``traffic`` × 10,000 buckets, placed first-fit at create time and stored as
  ``layer_start``), so a user is in at most one experiment of the layer. The variant
  within the experiment still comes from the experiment's own salt.

Overrides are a closed set (:class:`Overrides`): exactly the keys the Recommend path
applies (``recsvc/serving/servicer.py``); an unknown key is refused rather than silently
ignored by serving. A new ranking parameter (e.g. a diversity weight) becomes a field here
once serving applies it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from recsvc.errors import UsageError
from recsvc.events import seen_events

BUCKETS = 10_000
WEIGHT_TOLERANCE = 1e-9
HOLDOUT_VARIANT = "holdout"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
_NAME_HINT = "1-100 characters: letters, digits, '_', '.', '-' (not first)"


class ExperimentDefinitionError(UsageError):
    """An experiment definition was refused; the message names the field."""


class Overrides(BaseModel):
    """What a variant changes in serving. Unset keys keep the server's defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bandit_policy: str | None = Field(
        default=None, description="artwork policy name (bandit registry)"
    )
    model_version: str | None = Field(
        default=None, description="bundle version under the artifacts root"
    )
    k: int | None = Field(
        default=None, ge=1, le=500, description="items returned per request (serving caps at 500)"
    )
    exclude_seen: bool | None = Field(
        default=None, description="drop items the user interacted with"
    )
    seen_events: list[str] | None = Field(
        default=None,
        description="recent event types that hide their item, besides purchase and rating "
        "(any of view, click, add_to_cart; [] = only those); unset = the server's setting",
    )
    explore: bool | None = Field(default=None, description="let the artwork bandit explore")

    @field_validator("seen_events")
    @classmethod
    def _seen_known(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            seen_events(value)  # raises naming the known types
        return value

    def as_dict(self) -> dict[str, Any]:
        """Only the keys the variant sets."""
        return self.model_dump(exclude_none=True)


OVERRIDE_KEYS: tuple[str, ...] = tuple(Overrides.model_fields)


class Variant(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    weight: float = Field(ge=0.0, le=1.0)
    overrides: Overrides = Field(default_factory=lambda: Overrides.model_validate({}))

    @field_validator("name")
    @classmethod
    def _name_ok(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"variant name {value!r} is not valid ({_NAME_HINT})")
        return value

    @field_validator("weight")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("weight must be a finite number")
        return value


class Experiment(BaseModel):
    """One experiment as stored in the feature store (namespace ``experiments``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    salt: str = Field(min_length=1, max_length=200)
    traffic: float = Field(default=1.0, ge=0.0, le=1.0)
    segment: str | None = None
    holdout: float = Field(default=0.0, ge=0.0, lt=1.0)
    layer: str | None = None
    layer_start: int | None = Field(default=None, ge=0, lt=BUCKETS)
    start: datetime | None = None
    stop: datetime | None = None
    status: Literal["running", "stopped"] = "running"
    description: str = ""
    variants: list[Variant] = Field(min_length=2)
    created_at: datetime | None = None
    stopped_at: datetime | None = None

    @field_validator("name")
    @classmethod
    def _name_ok(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"experiment name {value!r} is not valid ({_NAME_HINT})")
        return value

    @field_validator("layer")
    @classmethod
    def _layer_ok(cls, value: str | None) -> str | None:
        if value is not None and not _NAME.match(value):
            raise ValueError(f"layer name {value!r} is not valid ({_NAME_HINT})")
        return value

    @field_validator("start", "stop", "created_at", "stopped_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        # Naive times in a file mean UTC: every replica must read the same instant.
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Experiment:
        total = math.fsum(v.weight for v in self.variants)
        if abs(total - 1.0) > WEIGHT_TOLERANCE:
            raise ValueError(f"variants: weights sum to {total!r}, they must sum to 1")
        seen: set[str] = set()
        for variant in self.variants:
            key = variant.name.lower()
            if key in seen:
                raise ValueError(f"variants: duplicate variant name {variant.name!r}")
            if self.holdout > 0 and key == HOLDOUT_VARIANT:
                raise ValueError(f"variants: {HOLDOUT_VARIANT!r} is reserved when holdout > 0")
            seen.add(key)
        if self.start and self.stop and self.stop <= self.start:
            raise ValueError("stop: must be after start")
        if self.layer_start is not None and self.layer is None:
            raise ValueError("layer_start: only meaningful with a layer")
        if self.layer_start is not None and self.layer_start + self.traffic_buckets > BUCKETS:
            raise ValueError("layer_start: the experiment's range runs past bucket 10,000")
        return self

    # -- derived -----------------------------------------------------------------------------
    @property
    def traffic_buckets(self) -> int:
        return round(self.traffic * BUCKETS)

    @property
    def control(self) -> Variant:
        return self.variants[0]

    def layer_range(self) -> tuple[int, int] | None:
        """Buckets ``[start, end)`` of the layer this experiment owns (layered only)."""
        if self.layer is None:
            return None
        start = self.layer_start or 0
        return start, start + self.traffic_buckets

    def is_active(self, now: datetime | None = None) -> bool:
        now = now or datetime.now(UTC)
        if self.status != "running":
            return False
        if self.start is not None and now < self.start:
            return False
        return not (self.stop is not None and now >= self.stop)

    def to_document(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


# -- loading -------------------------------------------------------------------------------


def _field_name(loc: tuple[Any, ...], data: Any) -> str:
    """``('variants', 1, 'overrides', 'foo')`` → ``variants[1 'treat'].overrides.foo``."""
    parts: list[str] = []
    for i, piece in enumerate(loc):
        if isinstance(piece, int):
            label = ""
            if i > 0 and loc[i - 1] == "variants" and isinstance(data, Mapping):
                variants = data.get("variants")
                if isinstance(variants, list) and piece < len(variants):
                    entry = variants[piece]
                    name = entry.get("name") if isinstance(entry, dict) else None
                    label = f" {name!r}" if name else ""
            parts.append(f"[{piece}{label}]")
        else:
            parts.append(("." if parts else "") + str(piece))
    return "".join(parts) or "(top level)"


def _explain(exc: ValidationError, data: Any) -> str:
    err = exc.errors()[0]
    loc = tuple(err.get("loc", ()))
    msg = str(err.get("msg", "invalid"))
    if err.get("type") == "extra_forbidden":
        if "overrides" in loc:
            msg = f"unknown override key; known keys: {', '.join(OVERRIDE_KEYS)}"
        else:
            msg = f"unknown field; known fields: {', '.join(Experiment.model_fields)}"
    msg = msg.removeprefix("Value error, ")
    # Model-level errors name their field at the start of the message ("variants: ...").
    if not loc and ": " in msg:
        field, _, rest = msg.partition(": ")
        return f"field '{field}': {rest}"
    return f"field '{_field_name(loc, data)}': {msg}"


def parse_experiment(data: Any, source: str = "experiment") -> Experiment:
    """Validate a mapping (from YAML or the store); refuse with the field named."""
    if not isinstance(data, Mapping):
        raise ExperimentDefinitionError(f"{source}: expected a mapping of fields at top level")
    try:
        return Experiment.model_validate(dict(data))
    except ValidationError as exc:
        raise ExperimentDefinitionError(f"{source}: {_explain(exc, data)}") from None


def load_experiment_file(path: str | Path) -> Experiment:
    """Read and validate an experiment YAML file (no store, no registry checks yet)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ExperimentDefinitionError(f"{path}: cannot read ({exc.strerror})") from None
    return parse_experiment_yaml(text, str(path))


def parse_experiment_yaml(text: str, source: str = "experiment") -> Experiment:
    """Validate experiment YAML text (a file's, or a form's in the console)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ExperimentDefinitionError(f"{source}: not valid YAML{where}") from None
    return parse_experiment(data, source)


# -- checks against the world (segment language, registries, other experiments) ------------


def check_segment(
    experiment: Experiment,
    source: str = "experiment",
    known_fields: Collection[str] | None = None,
) -> None:
    """Refuse a segment that does not parse or (given ``known_fields``) names another field."""
    if experiment.segment is None:
        return
    from recsvc.segments import SegmentError, parse_segment

    try:
        parse_segment(experiment.segment, known_fields)
    except SegmentError as exc:
        raise ExperimentDefinitionError(
            f"{source}: field 'segment': {exc.reason} at column {exc.position} "
            f"in {experiment.segment!r}"
        ) from None


def check_overrides(
    experiment: Experiment,
    policies: Collection[str] | None,
    model_versions: Collection[str] | None,
    source: str = "experiment",
) -> None:
    """Refuse unknown bandit policies / model versions (``None`` = cannot check)."""
    for i, variant in enumerate(experiment.variants):
        where = f"field 'variants[{i} {variant.name!r}].overrides"
        policy = variant.overrides.bandit_policy
        if policies is not None and policy is not None and policy not in policies:
            raise ExperimentDefinitionError(
                f"{source}: {where}.bandit_policy': unknown policy {policy!r}; "
                f"known: {', '.join(sorted(policies))}"
            )
        version = variant.overrides.model_version
        if model_versions is not None and version is not None and version not in model_versions:
            known = ", ".join(sorted(model_versions)) or "(none)"
            raise ExperimentDefinitionError(
                f"{source}: {where}.model_version': unknown model version {version!r}; "
                f"known: {known}"
            )


def check_against_stored(
    experiment: Experiment,
    stored: Mapping[str, Experiment],
    *,
    replace: bool = False,
    source: str = "experiment",
) -> Experiment:
    """Refuse name/salt clashes and full layers; returns the experiment placed in its layer."""
    others = {
        name: exp for name, exp in stored.items() if not (replace and name == experiment.name)
    }
    for name in others:
        if name.lower() == experiment.name.lower():
            hint = "" if name != experiment.name else " (use --replace to redefine it)"
            raise ExperimentDefinitionError(
                f"{source}: field 'name': experiment {name!r} already exists{hint}"
            )
    for name, other in others.items():
        if other.status == "running" and other.salt == experiment.salt:
            raise ExperimentDefinitionError(
                f"{source}: field 'salt': {experiment.salt!r} is already used by running "
                f"experiment {name!r}; independent experiments need independent salts"
            )
    if experiment.layer is None:
        return experiment
    taken = sorted(
        r
        for other in others.values()
        if other.layer == experiment.layer and other.status == "running"
        for r in [other.layer_range()]
        if r is not None
    )
    start = _place_in_layer(experiment, taken, source)
    return experiment.model_copy(update={"layer_start": start})


def _place_in_layer(experiment: Experiment, taken: list[tuple[int, int]], source: str) -> int:
    need = experiment.traffic_buckets
    if experiment.layer_start is not None:
        lo, hi = experiment.layer_start, experiment.layer_start + need
        for a, b in taken:
            if lo < b and a < hi:
                raise ExperimentDefinitionError(
                    f"{source}: field 'layer_start': buckets [{lo}, {hi}) overlap another "
                    f"experiment of layer {experiment.layer!r} at [{a}, {b})"
                )
        return lo
    cursor = 0
    for a, b in taken:
        if a - cursor >= need:
            return cursor
        cursor = max(cursor, b)
    if BUCKETS - cursor >= need:
        return cursor
    free = BUCKETS - sum(b - a for a, b in taken)
    raise ExperimentDefinitionError(
        f"{source}: field 'traffic': layer {experiment.layer!r} has no free range of "
        f"{need} buckets ({free / BUCKETS:.4f} of traffic left, possibly fragmented); "
        "experiments of one layer are mutually exclusive"
    )
