"""Jinja filters: numbers as the console shows them."""

from __future__ import annotations

import math
from typing import Any

from jinja2 import Environment


def _finite(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def fmt(value: Any, spec: str = "{:.4g}") -> str:
    """``spec.format(value)``, or '-' for a missing or non-finite value."""
    f = _finite(value)
    if f is None:
        return "-"
    if spec == "{}" and f.is_integer():
        return str(int(f))
    return spec.format(f)


def pct(value: Any) -> str:
    return fmt(value, "{:.2%}")


def ms(value: Any) -> str:
    return fmt(value, "{:.2f} ms")


def register_filters(env: Environment) -> None:
    env.filters["fmt"] = fmt
    env.filters["pct"] = pct
    env.filters["ms"] = ms
    env.filters["raw"] = lambda v: "" if _finite(v) is None else repr(float(v))
