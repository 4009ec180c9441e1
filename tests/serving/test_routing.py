"""Routing: one place for a user's experiment variant, pinned model and artwork policies, over
a real bundle, a real SQLite store and a real experiment router."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from feature_store import OnlineStore, open_store
from recsvc.cli import main
from recsvc.experiments.router import ExperimentRouter
from recsvc.pipeline import UserInput
from recsvc.serving.hotswap import ModelHolder
from recsvc.serving.metrics import ServingMetrics
from recsvc.serving.routing import NO_OVERRIDES, Routing, overrides_of

EXPERIMENT = {
    "name": "north-art",
    "salt": "north-art-1",
    "segment": 'region in ("north")',
    "variants": [  # both on ts-item, so every user in the segment gets it
        {"name": "a", "weight": 0.5, "overrides": {"bandit_policy": "ts-item"}},
        {"name": "b", "weight": 0.5, "overrides": {"bandit_policy": "ts-item"}},
    ],
}


@pytest.fixture(scope="module")
def holder(bundle_root: Path) -> ModelHolder:
    return ModelHolder(bundle_root, "default", ServingMetrics())


@pytest.fixture
def store(tmp_path: Path) -> Iterator[OnlineStore]:
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    spec = tmp_path / "exp.yaml"
    spec.write_text(yaml.safe_dump(EXPERIMENT), encoding="utf-8")
    assert main(["experiments", "create", "--file", str(spec), "--feature-store", url]) == 0
    opened = open_store(url)
    yield opened
    opened.close()


@pytest.fixture
def routing(holder: ModelHolder, store: OnlineStore) -> Iterator[Routing]:
    router = ExperimentRouter(store, background=False)
    yield Routing(holder, router, "default")
    router.close()


def test_without_experiments_everyone_gets_the_server_policy(holder: ModelHolder) -> None:
    routing = Routing(holder, None, "ts-item")
    user = UserInput(user_id="u001", region="north")
    assert routing.assign_request(user) is None
    assert routing.assign("u001", {"region": "north"}) is None
    assert overrides_of(None) is NO_OVERRIDES
    model = routing.model_for(NO_OVERRIDES)
    assert model is holder.model
    policy, default = routing.policies(model, NO_OVERRIDES)
    assert policy is model.policy("ts-item") and default is model.policy("default")


def test_the_segment_sees_profile_then_attributes_then_region(routing: Routing) -> None:
    def variant(user: UserInput) -> str | None:
        found = routing.assign_request(user)
        return None if found is None else found.experiment

    assert variant(UserInput(user_id="u001", profile={"region": "north"})) == "north-art"
    assert variant(UserInput(user_id="u001", profile={"region": "south"})) is None
    south_profile_north_attr = UserInput(
        user_id="u001", profile={"region": "south"}, attributes={"region": "north"}
    )
    assert variant(south_profile_north_attr) == "north-art"
    north_attr_south_region = UserInput(
        user_id="u001", region="south", attributes={"region": "north"}
    )
    assert variant(north_attr_south_region) is None  # the request's region wins
    assert variant(UserInput(user_id="", region="north")) is None  # anonymous: no experiment


def test_a_variant_policy_wins_over_the_server_one(routing: Routing, holder: ModelHolder) -> None:
    assignment = routing.assign("u002", {"region": "north"})
    assert assignment is not None and assignment.variant in ("a", "b")
    model = routing.model_for(overrides_of(assignment))
    assert model is holder.model  # no model_version pinned
    policy, default = routing.policies(model, overrides_of(assignment))
    assert policy is model.policy("ts-item") and default is model.policy("default")
    policy, _ = routing.policies(model, overrides_of(None))
    assert policy is model.policy("default")


def test_a_policy_that_cannot_be_built_falls_back_to_default(
    holder: ModelHolder, caplog: pytest.LogCaptureFixture
) -> None:
    routing = Routing(holder, None, "no-such-policy")
    with caplog.at_level(logging.ERROR, logger="recsvc.serving"):
        policy, default = routing.policies(holder.model, NO_OVERRIDES)
    assert policy is default is holder.model.policy("default")
    assert "no-such-policy" in caplog.text


def test_the_pinned_model_is_the_live_one_when_it_is_that_version(
    routing: Routing, holder: ModelHolder
) -> None:
    version = holder.model.version
    assert routing.model_for({"model_version": version}) is holder.model
