"""Fixtures for the experiments tests: a real SQLite feature store in a temp dir."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from feature_store.base import OnlineStore
from feature_store.factory import open_store


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.sqlite'}"


@pytest.fixture
def store(store_url: str) -> Iterator[OnlineStore]:
    s = open_store(store_url)
    yield s
    s.close()
