"""Types of the compiled choice kernel (recsvc/bandit/_choice.c)."""

from collections.abc import Mapping, Sequence

import numpy as np

MAX_VARIANTS: int

def choose_rows(
    table: np.ndarray,
    rows: list[int],
    k_rows: np.ndarray,
    noise: np.ndarray,
    start: int,
    n_samples: int,
    u: Sequence[float],
    floors: Sequence[float],
) -> tuple[list[int], list[float]]: ...
def choose_linear(
    rows: list[int],
    k_rows: np.ndarray,
    code_rows: np.ndarray,
    offsets: list[list[float] | None],
    prior: list[list[float]],
    m: Sequence[float],
    var: Sequence[float],
    noise: np.ndarray,
    start: int,
    n_samples: int,
    u: Sequence[float],
    floors: Sequence[float],
) -> tuple[list[int], list[float]]: ...
def ts_moments(
    table: np.ndarray,
    rows: list[int],
    item_hashes: list[Mapping[str, float] | None],
    bucket_hashes: list[Mapping[str, float] | None],
    n_fields: list[tuple[str, ...]],
    c_fields: list[tuple[str, ...]],
    prior_alpha: float,
    prior_beta: float,
    backoff_strength: float,
) -> None: ...
def theme_scores(score: np.ndarray, phi: np.ndarray) -> tuple[list[float], list[float]]: ...
def serve_lists(
    choice: list[list[float]], ks: list[int], u: Sequence[float], floors: Sequence[float]
) -> tuple[list[int], list[float]]: ...
def choice_probs(
    table: np.ndarray,
    rows: list[int],
    k_rows: np.ndarray,
    noise: np.ndarray,
    start: int,
    n_samples: int,
) -> list[list[float]]: ...
