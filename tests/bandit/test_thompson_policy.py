"""Beta-Bernoulli Thompson sampling: learning, propensities, floor, greedy mode, back-off."""

from __future__ import annotations

import numpy as np
import pytest

from feature_store.base import StoredEvent
from recsvc.bandit.base import ArtworkContext
from recsvc.bandit.thompson import ThompsonPolicy
from recsvc.bandit.variants import accumulate
from tests.bandit.worlds import catalog

ART, INDEX = catalog(
    {
        "i1": [("a", "comedy"), ("b", "drama"), ("c", "action")],
        "i2": [("a", "comedy"), ("b", "drama")],
        "i3": [("only", "drama")],
    }
)
CTX = ArtworkContext("u1", region="EU", features={"segment": "vip"})


def _event(kind: str, item: str, variant: str) -> StoredEvent:
    return StoredEvent("e", "u1", item, kind, 0, "r", variant)


def test_concentrates_on_best_variant_over_simulated_clicks() -> None:
    policy = ThompsonPolicy(ART, INDEX, bucket_features=(), seed=1)
    truth = {"a": 0.04, "b": 0.10, "c": 0.20}
    rng = np.random.default_rng(2)
    counters: dict[str, dict[str, float]] = {}
    picks = []
    for _ in range(3000):
        (d,) = policy.choose(CTX, ["i1"], counters)
        picks.append(d.variant_id)
        accumulate(policy.updates_for(CTX, _event("impression", "i1", d.variant_id)), counters)
        if rng.random() < truth[d.variant_id]:
            accumulate(policy.updates_for(CTX, _event("click", "i1", d.variant_id)), counters)
    late = picks[-500:]
    assert late.count("c") / len(late) > 0.8
    (best,) = policy.choose(CTX, ["i1"], counters, explore=False)
    assert best.variant_id == "c"


def _skewed_counters(policy: ThompsonPolicy) -> dict[str, dict[str, float]]:
    return {
        policy.item_key("i1"): {"a:n": 60, "a:c": 6, "b:n": 50, "b:c": 7, "c:n": 40, "c:c": 3},
        policy.item_key("i2"): {"a:n": 10, "a:c": 1, "b:n": 12, "b:c": 2},
    }


def test_propensities_sum_to_one_and_match_choice_frequencies() -> None:
    policy = ThompsonPolicy(ART, INDEX, bucket_features=(), n_samples=4000, seed=3)
    counters = _skewed_counters(policy)
    _, probs, _ = policy.variant_probabilities(CTX, ["i1", "i2"], counters)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert probs[1, 2] == 0.0  # padding of the two-variant item never wins

    fast = ThompsonPolicy(ART, INDEX, bucket_features=(), n_samples=64, explore_share=0.0, seed=4)
    n = 3000
    seen: dict[str, int] = {}
    logged: dict[str, list[float]] = {}
    for _ in range(n):
        (d,) = fast.choose(CTX, ["i1"], counters)
        seen[d.variant_id] = seen.get(d.variant_id, 0) + 1
        logged.setdefault(d.variant_id, []).append(d.propensity)
    for k, v in enumerate(["a", "b", "c"]):
        freq = seen.get(v, 0) / n
        assert abs(freq - probs[0, k]) < 0.035, (v, freq, probs[0, k])
        # Each logged propensity is a 64-draw estimate of the same probability.
        assert abs(float(np.mean(logged[v])) - probs[0, k]) < 0.035


def test_exploration_floor_is_respected() -> None:
    policy = ThompsonPolicy(ART, INDEX, bucket_features=(), floor=0.1, explore_share=0.0, seed=5)
    counters = {policy.item_key("i1"): {"a:n": 5000, "a:c": 1000, "b:n": 5000, "c:n": 5000}}
    counts = {"a": 0, "b": 0, "c": 0}
    for _ in range(3000):
        (d,) = policy.choose(CTX, ["i1"], counters)
        assert d.propensity >= 0.1 - 1e-12
        counts[d.variant_id] += 1
    assert counts["b"] / 3000 > 0.07 and counts["c"] / 3000 > 0.07
    (d,) = policy.choose(CTX, ["i1"], counters)
    # "a" wins every draw: its served probability is 1 - 2 * floor.
    assert d.variant_id != "a" or d.propensity == pytest.approx(0.8)


def test_explore_false_is_deterministic_best_posterior_mean() -> None:
    policy = ThompsonPolicy(ART, INDEX, bucket_features=(), prior_alpha=1.0, prior_beta=1.0)
    counters = _skewed_counters(policy)
    first = policy.choose(CTX, ["i1", "i2", "i3", "unknown"], counters, explore=False)
    for _ in range(20):
        assert policy.choose(CTX, ["i1", "i2", "i3", "unknown"], counters, explore=False) == first
    h = counters[policy.item_key("i1")]
    means = {v: (1 + h[f"{v}:c"]) / (2 + h[f"{v}:n"]) for v in "abc"}
    assert first[0].variant_id == max(means, key=means.__getitem__)
    assert [d.propensity for d in first] == [1.0] * 4
    assert first[2].variant_id == "only"
    assert first[3].variant_id == ""  # no artwork: empty variant, not an error


def test_thin_bucket_backs_off_to_item_level() -> None:
    policy = ThompsonPolicy(ART, INDEX, bucket_features=("region",), backoff_strength=50.0)
    item = {"a:n": 4000, "a:c": 400, "b:n": 4000, "b:c": 200}
    bucket = policy.bucket_key("i2", policy.bucket(CTX))
    thin = {policy.item_key("i2"): item, bucket: {"b:n": 2, "b:c": 2}}
    (d,) = policy.choose(CTX, ["i2"], thin, explore=False)
    assert d.variant_id == "a"  # 2/2 clicks in a thin bucket do not overturn 4000 rounds
    thick = {policy.item_key("i2"): item, bucket: {"a:n": 800, "a:c": 16, "b:n": 800, "b:c": 160}}
    (d,) = policy.choose(CTX, ["i2"], thick, explore=False)
    assert d.variant_id == "b"  # a well-observed bucket follows its own data


def test_updates_and_counter_keys() -> None:
    policy = ThompsonPolicy(ART, INDEX, bucket_features=("region", "segment"))
    keys = policy.counter_keys(CTX, ["i1", "i2"])
    assert keys == [
        "bandit:ts:i1",
        "bandit:ts:i2",
        "bandit:ts:i1|region=EU,segment=vip",
        "bandit:ts:i2|region=EU,segment=vip",
    ]
    imp = policy.updates_for(CTX, _event("impression", "i1", "b"))
    assert {(d.key, d.field, d.amount) for d in imp} == {
        ("bandit:ts:i1", "b:n", 1.0),
        ("bandit:ts:i1|region=EU,segment=vip", "b:n", 1.0),
    }
    click = policy.updates_for(CTX, _event("click", "i1", "b"))
    assert {d.field for d in click} == {"b:c"}
    assert policy.updates_for(CTX, _event("click", "i1", "nope")) == []
    assert policy.updates_for(CTX, _event("click", "i1", "")) == []
    assert policy.updates_for(CTX, _event("purchase", "i1", "b")) == []


def test_bad_settings_are_refused() -> None:
    from recsvc.errors import UsageError

    with pytest.raises(UsageError, match="floor"):
        ThompsonPolicy(ART, INDEX, floor=2.0)
    with pytest.raises(UsageError, match="prior"):
        ThompsonPolicy(ART, INDEX, prior_alpha=0.0)


def test_served_variant_is_drawn_from_the_logged_propensities() -> None:
    from recsvc.bandit.variants import sample_rows

    probs = np.array([[0.2, 0.5, 0.3, 0.0], [0.0, 1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3, 0.0]])
    rng = np.random.default_rng(0)
    draws = np.stack([sample_rows(probs, rng) for _ in range(6000)])
    for row in range(3):
        freq = np.bincount(draws[:, row], minlength=4) / len(draws)
        np.testing.assert_allclose(freq, probs[row], atol=0.025)
    assert (draws[:, 1] == 1).all() and (draws != 3).all()


def test_served_variant_is_drawn_from_the_win_counts() -> None:
    from recsvc.bandit.variants import sample_counts

    counts = np.array([[2, 5, 3, 0], [0, 10, 0, 0], [4, 4, 4, 0], [0, 7, 7, 0]])  # row 4: a tie
    rng = np.random.default_rng(0)
    draws = []
    for _ in range(6000):
        probs, chosen = sample_counts(counts, rng)
        draws.append(chosen)
    np.testing.assert_allclose(probs, counts / counts.sum(axis=1, keepdims=True))
    stacked = np.stack(draws)
    for row in range(len(counts)):
        freq = np.bincount(stacked[:, row], minlength=4) / len(stacked)
        np.testing.assert_allclose(freq, probs[row], atol=0.025)
    assert (stacked[:, 1] == 1).all() and (stacked != 3).all()
    assert not (stacked[:, 3] == 0).any()


def test_importance_weights_are_unbiased_with_few_samples() -> None:
    """E[1{served = v} / propensity] = 1 for every variant: IPS on our logs is unbiased even
    when the propensity is a coarse (16-draw) Monte Carlo estimate. (Without a floor a
    variant that wins none of the draws cannot be served in that call: the floor is what
    keeps every variant in the logs' support.)"""
    policy = ThompsonPolicy(ART, INDEX, bucket_features=(), n_samples=16, floor=0.05, seed=8)
    counters = _skewed_counters(policy)
    n = 20_000  # the rarest variant's mean weight has a standard error of ~0.03 here
    weights = {"a": 0.0, "b": 0.0, "c": 0.0}
    for _ in range(n):
        (d,) = policy.choose(CTX, ["i1"], counters)
        weights[d.variant_id] += 1.0 / d.propensity
    for v, total in weights.items():
        assert total / n == pytest.approx(1.0, abs=0.06), (v, total / n)
