"""A published hand-made bundle (tests/serving/bundle_factory.py) and its serving model."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsvc.pipeline import ServingModel
from recsvc.serving.hotswap import load_model
from tests.serving.bundle_factory import publish_bundle


@pytest.fixture(scope="module")
def bundle_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pipeline-bundles")
    publish_bundle(root)
    return root


@pytest.fixture(scope="module")
def model(bundle_root: Path) -> ServingModel:
    return load_model(bundle_root, "default")
