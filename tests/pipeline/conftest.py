"""The serving tests' published hand-made bundle (tests/serving/bundle_factory.py) and its
serving model."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsvc.pipeline import ServingModel
from recsvc.serving.hotswap import load_model
from tests.serving.conftest import bundle_root

__all__ = ["bundle_root", "model"]


@pytest.fixture(scope="module")
def model(bundle_root: Path) -> ServingModel:
    return load_model(bundle_root, "default")
