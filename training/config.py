"""Settings of one ``recsvc train`` run (pydantic: validated, recorded in the manifest)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from training.errors import TrainingError


class TrainConfig(BaseModel):
    """Everything that decides what ``train`` builds; recorded in ``manifest["config"]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: Literal["als", "bpr", "ease-lowrank", "ease-als"] = Field(
        default="als",
        description="shipped CF model (als may be replaced by ease-lowrank or ease-als)",
    )
    factors: int | None = Field(
        default=None, ge=2, le=1024, description="latent factors (None: default or tuned)"
    )
    iterations: int | None = Field(default=None, ge=1, le=1000, description="training epochs")
    model_params: dict[str, Any] = Field(
        default_factory=dict, description="extra parameters of the shipped model (override)"
    )
    tune: bool = Field(default=True, description="bounded hyperparameter search (ALS)")
    tune_budget_s: float = Field(default=300.0, gt=0, description="search wall-clock budget")
    lowrank_ease: bool = Field(
        default=True,
        description="compare ALS with low-rank EASE on validation folds and ship the better "
        "(catalogs of at most training.models.ease.MAX_ITEMS items; model 'als' with tune)",
    )
    lowrank_ease_params: dict[str, Any] = Field(
        default_factory=dict,
        description="parameters of ease-lowrank (lambda, dropout, user_weight, rank, "
        "popularity_exponent); set ones are not searched",
    )
    hybrid: bool = Field(default=True, description="fit LightFM when features exist")
    hybrid_params: dict[str, Any] = Field(default_factory=dict)
    candidates: int = Field(default=200, ge=1, le=10_000, description="candidates per user")
    candidate_recall_target: float = Field(
        default=0.9, gt=0, le=1, description="IVF candidates: recall of the exact top-C"
    )
    candidate_exact_max_cells: float = Field(
        default=2e9, ge=0, description="users x items up to which candidates are exact"
    )
    region_candidates: int = Field(default=500, ge=1, le=100_000, description="per region")
    region_source: Literal["auto", "region_popularity", "lightfm"] = Field(
        default="auto", description="ranking of region-only users' lists (auto: validated)"
    )
    region_validation_max_nnz: int = Field(
        default=2_000_000,
        ge=0,
        description=(
            "above this, skip the region source's hybrid check and the profile cold-start "
            "candidates that need a refit (embedding, LightFM)"
        ),
    )
    index_threshold: int = Field(
        default=50_000, ge=1, description="catalogs this big or bigger get HNSW, else exact"
    )
    index_recall_target: float = Field(default=0.95, gt=0, le=1)
    region_prior_strength: float = Field(
        default=1000.0, ge=0, description="interactions of global prior a region is shrunk by"
    )
    event_weights: dict[str, float] | None = Field(
        default=None, description="weight per event_type (None: data.DEFAULT_EVENT_WEIGHTS)"
    )
    seed: int = 42
    threads: int = Field(default=0, ge=0, description="threads for batch steps (0: all cores)")

    @classmethod
    def from_file(cls, path: Path, **overrides: Any) -> TrainConfig:
        """Read a YAML/JSON config file; ``overrides`` (non-None) win over the file."""
        import yaml

        try:
            raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise TrainingError(f"{path}: cannot read train config: {exc}") from None
        if not isinstance(raw, dict):
            raise TrainingError(f"{path}: train config must be a mapping of settings")
        raw.update({k: v for k, v in overrides.items() if v is not None})
        return cls.checked(where=str(path), **raw)

    @classmethod
    def checked(cls, where: str = "train config", **values: Any) -> TrainConfig:
        """Construct, turning pydantic's error into a one-line TrainingError naming the field."""
        try:
            return cls(**values)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "?"
            raise TrainingError(f"{where}: field '{field}': {first['msg']}") from None

    @property
    def faiss_threads(self) -> int | None:
        return None if self.threads == 0 else self.threads
