"""The compiled choice (recsvc/bandit/_choice.c) against the numpy/Python reference.

Both paths read the same uniforms and the same normal-pool window, so with the same seed and
state they must make exactly the same decisions with exactly the same propensities; any
difference in the float32 score arithmetic, the first-maximum rule or the floored served draw
shows up as a different variant or propensity somewhere in a few thousand choices.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from recsvc.bandit.base import ArtworkContext, ArtworkDecision
from recsvc.bandit.linear import LinearThompsonPolicy, build_feature_map
from recsvc.bandit.thompson import ThompsonPolicy
from recsvc.bandit.variants import COMPILED, NormalPool, decisions, floors, new_cells, serve
from tests.bandit.worlds import catalog

THEMES = ("comedy", "drama", "action", "romance", "horror")


def _world(seed: int, max_variants: int = 5) -> tuple[Any, dict[str, int], list[str]]:
    rng = np.random.default_rng(seed)
    variants = {
        f"i{i}": [
            (f"v{j}", THEMES[t])
            for j, t in enumerate(
                rng.choice(len(THEMES), size=int(rng.integers(1, max_variants + 1)), replace=False)
            )
        ]
        for i in range(40)
    }
    art, index = catalog(variants)
    items = [f"i{i}" for i in rng.permutation(40)[:20]]
    items.insert(int(rng.integers(0, 20)), "no-such-item")  # an item without artwork
    return art, index, items


def _same(a: list[ArtworkDecision], b: list[ArtworkDecision]) -> None:
    assert [(d.item_id, d.variant_id) for d in a] == [(d.item_id, d.variant_id) for d in b]
    assert [d.propensity for d in a] == [d.propensity for d in b]  # exactly, not approx


def test_the_extension_is_built() -> None:
    # `make install` builds it; without it the server silently runs the slower reference.
    assert COMPILED is not None, "recsvc/bandit/_choice.c is not built: run `make install`"


@pytest.mark.parametrize("explore_share", [0.0, 0.05, 0.3])
@pytest.mark.parametrize("buckets", [("region", "segment"), ("region",), ()])
def test_bucketed_ts_compiled_equals_reference(
    buckets: tuple[str, ...], explore_share: float
) -> None:
    art, index, items = _world(3)
    kw: dict[str, Any] = dict(
        bucket_features=buckets, refresh_ms=60_000, seed=5, explore_share=explore_share
    )
    fast = ThompsonPolicy(art, index, **kw)
    slow = ThompsonPolicy(art, index, compiled=False, **kw)
    assert fast._kernel is not None and slow._kernel is None
    rng = np.random.default_rng(9)
    for call in range(300):
        ctx = ArtworkContext(
            f"u{call % 7}", region=f"r{call % 3}", features={"segment": f"s{call % 2}"}
        )
        keys = fast.counter_keys(ctx, items)
        assert keys == slow.counter_keys(ctx, items)
        counters = {}
        for key in keys:  # clicks <= impressions, some fields missing
            h = {}
            for v in range(5):
                if rng.random() < 0.8:
                    n = float(rng.integers(0, 500))
                    h[f"v{v}:n"] = n
                    h[f"v{v}:c"] = float(rng.integers(0, int(n * 0.4) + 1))
            counters[key] = h
        _same(fast.choose(ctx, items, counters), slow.choose(ctx, items, counters))
    # The posteriors the kernel wrote (ts_moments) are the reference's, value for value.
    assert fast._tables.keys() == slow._tables.keys()
    for bucket, table in fast._tables.items():
        np.testing.assert_array_equal(table.values, slow._tables[bucket].values)
        assert table.choice == slow._tables[bucket].choice  # cached probabilities (ts-item)


@pytest.mark.parametrize("item_effects", [True, False])
@pytest.mark.parametrize("floor", [0.0, 0.02])
def test_linear_ts_compiled_equals_reference(item_effects: bool, floor: float) -> None:
    art, index, items = _world(4)
    factors = np.random.default_rng(6).normal(size=(12, 6))
    fmap = build_feature_map(
        factors,
        {f"u{k}": k for k in range(12)},
        {"region": np.array(["EU", "US"] * 6)},
        taste_dims=3,
        context_features=("region",),
    )
    kw: dict[str, Any] = dict(item_effects=item_effects, floor=floor, refresh_ms=0, seed=8)
    fast = LinearThompsonPolicy(art, index, fmap, **kw)
    slow = LinearThompsonPolicy(art, index, fmap, compiled=False, **kw)
    assert fast.index.distinct_themes and fast._kernel is not None and slow._kernel is None
    # The theme scores are a dot product in double (kernel) vs numpy's float32 matmul: equal
    # within rounding (checked below); the rest of the path is compared exactly, so the
    # reference gets the kernel's scores.
    numpy_scores = slow._theme_scores
    slow._theme_scores = fast._theme_scores  # type: ignore[method-assign]
    rng = np.random.default_rng(10)
    theme_state: dict[str, dict[str, float]] = {}
    for call in range(300):
        ctx = ArtworkContext(f"u{call % 14}", region=("EU", "US", "")[call % 3])
        if call % 50 == 0:  # the theme posteriors move now and then
            d = fmap.dim
            for key in fast.theme_keys:
                x = rng.normal(size=(40, d))
                a = x.T @ x
                h = {f"A:{i}:{j}": float(a[i, j]) for i in range(d) for j in range(i, d)}
                h.update({f"b:{i}": float(v) for i, v in enumerate(rng.normal(2, 1, d))})
                theme_state[key] = h
        keys = fast.counter_keys(ctx, items)
        counters: dict[str, dict[str, float]] = {k: theme_state.get(k, {}) for k in keys}
        for key in keys:
            if ":item:" in key:
                counters[key] = {
                    f"v{v}:{f}": float(rng.normal(5.0, 4.0)) for v in range(5) for f in "nr"
                }
        _same(fast.choose(ctx, items, counters), slow.choose(ctx, items, counters))
        post = fast._posterior
        assert post is not None and post.score is not None
        phi = fast._features(ctx)
        pairs = zip(fast._theme_scores(post.score, phi), numpy_scores(post.score, phi), strict=True)
        for got, want in pairs:
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_linear_ts_with_cached_offsets_compiled_equals_reference() -> None:
    """With a refresh interval most items come from the cached offsets (None = the prior)."""
    art, index, items = _world(12)
    fmap = build_feature_map(np.random.default_rng(1).normal(size=(6, 4)), {}, {}, taste_dims=2)
    fast = LinearThompsonPolicy(art, index, fmap, refresh_ms=60_000, seed=2)
    slow = LinearThompsonPolicy(art, index, fmap, refresh_ms=60_000, seed=2, compiled=False)
    slow._theme_scores = fast._theme_scores  # type: ignore[method-assign]
    rng = np.random.default_rng(3)
    for call in range(200):
        ctx = ArtworkContext(f"new-user-{call}")  # cold start: the live vector only
        chosen = items[call % 5 : call % 5 + 12]
        keys = fast.counter_keys(ctx, chosen)
        counters = {
            k: {f"v{v}:{f}": float(rng.normal(3.0, 2.0)) for v in range(5) for f in "nr"}
            for k in keys
            if rng.random() < 0.5  # half the stale items have no hash yet
        }
        _same(fast.choose(ctx, chosen, counters), slow.choose(ctx, chosen, counters))


def _kernel_args(vmax: int = 3, n: int = 2) -> dict[str, Any]:
    table = np.zeros((4, 2, vmax), np.float32)
    return dict(
        table=table,
        rows=list(range(n)),
        k_rows=np.full(4, vmax, np.int64),
        noise=NormalPool(np.random.default_rng(0), 1024).values,
        start=0,
        n_samples=8,
        u=[0.5] * n,
        floors=[0.0] * (vmax + 1),
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rows": [0, 4]}, "outside the catalog"),
        ({"rows": [0, -1]}, "outside the catalog"),
        ({"k_rows": np.full(4, 9, np.int64)}, "variants"),
        ({"k_rows": np.full(4, 3, np.int32)}, "int64"),
        ({"table": np.zeros((4, 2, 3), np.float64)}, "float32"),
        ({"table": np.zeros((5, 2, 3), np.float32)}, "n_rows"),
        ({"noise": np.zeros(1024, np.float64)}, "float32"),
        ({"start": 1000}, "noise holds"),
        ({"u": [0.5]}, "uniforms"),
        ({"floors": [0.0]}, "floors"),
        ({"n_samples": 0}, "n_samples"),
    ],
)
def test_kernel_refuses_bad_input(change: dict[str, Any], message: str) -> None:
    assert COMPILED is not None
    args = {**_kernel_args(), **change}
    with pytest.raises(ValueError, match=message):
        COMPILED.choose_rows(*args.values())


def test_serve_lists_draws_like_serve() -> None:
    """Float weights (cached choice probabilities): the served variant and propensity equal
    variants.serve's for uniforms across [0, 1), with and without a floor."""
    assert COMPILED is not None
    art, index, items = _world(21)
    policy = ThompsonPolicy(art, index, bucket_features=())
    cells = new_cells(policy.index, items)
    rng = np.random.default_rng(4)
    for floor in (0.0, 0.05):
        floor_by_k = floors(policy.index.vmax, 0.0, floor)
        for _ in range(200):
            weights = [(rng.dirichlet(np.ones(it.k)) * rng.uniform(0.5, 2)).tolist()
                       for it in cells.found]  # fmt: skip
            if rng.random() < 0.3:
                weights[0] = [0.0] * (cells.found[0].k - 1) + [1.0]
            u = rng.random(cells.n).tolist()
            ks = [it.k for it in cells.found]
            padded = [w + [0.0] * (policy.index.vmax - len(w)) for w in weights]  # as cached
            chosen, props = COMPILED.serve_lists(padded, ks, u, floor_by_k)
            _same(
                decisions(cells, items, chosen, props),
                serve(cells, items, weights, u, floor_by_k),  # type: ignore[arg-type]
            )
    with pytest.raises(ValueError, match="weights"):
        COMPILED.serve_lists([[0.5]], [2], [0.5], [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="variants"):
        COMPILED.serve_lists([[0.5]], [3], [0.5], [0.0, 0.0, 0.0])


def test_ts_moments_refuses_bad_input() -> None:
    assert COMPILED is not None
    table = np.zeros((3, 2, 2), np.float32)
    fields: tuple[list[tuple[str, ...]], list[tuple[str, ...]]] = (
        [("a:n", "b:n")],
        [("a:c", "b:c")],
    )
    with pytest.raises(ValueError, match="outside the table"):
        COMPILED.ts_moments(table, [3], [None], [None], *fields, 1.0, 1.0, 20.0)
    with pytest.raises(ValueError, match="float32"):
        COMPILED.ts_moments(table.astype(np.float64), [0], [None], [None], *fields, 1.0, 1.0, 20.0)
    with pytest.raises(ValueError, match="one hash"):
        COMPILED.ts_moments(table, [0, 1], [None], [None], *fields, 1.0, 1.0, 20.0)
    with pytest.raises(TypeError):  # a counter that is not a number
        not_a_number = [{"a:c": "x"}]
        COMPILED.ts_moments(table, [0], not_a_number, [None], *fields, 1.0, 1.0, 20.0)  # type: ignore[arg-type]  # on purpose
    assert not table.any()  # nothing written by a refused call before the bad row


def test_kernel_counts_the_first_maximum_and_logs_exact_propensities() -> None:
    """Two identical cells tie on every draw: the first wins all of them (as numpy's argmax),
    so without a floor the second is never served; with floor f each gets f + (1 - 2f) w/S."""
    assert COMPILED is not None
    args = _kernel_args(vmax=2, n=1)
    args["table"][:, 0, :] = 0.3  # same mean, sd 0: identical scores
    for u in (0.0, 0.5, 0.999999):
        chosen, props = COMPILED.choose_rows(*{**args, "u": [u]}.values())
        assert chosen == [0] and props == [1.0]
    floored = {**args, "floors": [0.0, 0.0, 0.1], "u": [0.95]}
    chosen, props = COMPILED.choose_rows(*floored.values())
    assert chosen == [1] and props == [pytest.approx(0.1)]
