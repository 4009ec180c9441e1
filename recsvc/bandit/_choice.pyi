"""Types of the compiled choice kernel (recsvc/bandit/_choice.c)."""

from collections.abc import Sequence

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
