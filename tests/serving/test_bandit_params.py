"""Artwork policy parameters from ServingSettings.bandit_params reach the served policy."""

from __future__ import annotations

import pytest

from recsvc.bundle import resolve_current
from recsvc.commands.serve import add_arguments, settings_from_args
from recsvc.errors import UsageError
from recsvc.serving.hotswap import load_model
from recsvc.v1 import recommender_pb2 as pb
from tests.serving.bundle_factory import item_id

ITEMS = [item_id(j) for j in range(12)]  # 1, 2 or 3 variants each


def _propensities(stub, items: list[str]) -> dict[str, float]:  # type: ignore[no-untyped-def]
    resp = stub.SelectArtwork(pb.SelectArtworkRequest(user_id="u003", item_ids=items), timeout=10)
    return {c.item_id: c.propensity for c in resp.choices}


def test_policy_params_reach_selectartwork(bundle_root, start_server, stub_for) -> None:  # type: ignore[no-untyped-def]
    # explore_share 1: TS is uniform by construction, so each propensity is exactly 1/k.
    uniform = start_server(
        bundle_root, bandit_policy="ts", bandit_params={"ts": {"explore_share": 1.0}}
    )
    served = _propensities(stub_for(uniform), ITEMS)
    model = uniform.servicer.holder.model
    for item in ITEMS:
        k = len(model.variants_of(model.item_id_list.index(item)))
        assert served[item] == pytest.approx(1.0 / k, abs=1e-6)  # float32 on the wire
    # With the defaults, a propensity is a sampled estimate (n / draws): the 3-variant
    # items' estimates are not all exactly 1/3, so the parameter made the answer above.
    default = start_server(bundle_root, bandit_policy="ts")
    estimates = _propensities(stub_for(default), ITEMS)
    three = [i for i in ITEMS if abs(served[i] - 1 / 3) < 1e-6]
    assert len(three) >= 3
    assert not all(abs(estimates[i] - 1 / 3) < 1e-6 for i in three)


def test_unknown_policy_param_is_refused_at_load(bundle_root) -> None:  # type: ignore[no-untyped-def]
    path = resolve_current(bundle_root)
    with pytest.raises(UsageError, match=r"'ts'.*no_such_knob"):
        load_model(path, "default", {"ts": {"no_such_knob": 1}})
    assert load_model(path, "ts", {"ts": {"refresh_ms": 0}}).policy("ts") is not None


def test_serve_flag_parses_json_object() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--artifacts", ".", "--bandit-params", '{"ts": {"refresh_ms": 0}}'])
    assert settings_from_args(args).bandit_params == {"ts": {"refresh_ms": 0}}
    with pytest.raises(SystemExit):
        parser.parse_args(["--artifacts", ".", "--bandit-params", "[1, 2]"])
