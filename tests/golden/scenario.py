"""The golden scenario: a fixed bundle, a fixed store state and a fixed mix of calls.

``python -m tests.golden.scenario --write tests/golden/answers.json`` records what the
service answers; ``test_golden.py`` runs the same mix on the current code and compares.
Only answers are recorded (items, scores, reasons, artwork variants, propensities, flags,
status codes, export and audience rows and counts), never how they were computed, so a
restructuring of serving, export or the pipeline keeps this file valid while a change of
behaviour fails it.

Everything is deterministic: the bundle is the seeded hand-made one of
``tests/serving/bundle_factory.py`` plus a seeded LightFM-style hybrid, an extra profile
column, artwork themes and the exact ALS fold-in; the store is a fresh SQLite file seeded
through the store API; the stochastic artwork policy (Thompson sampling, reached through
an experiment) has a fixed seed and reads its counters on every call; requests are made
one at a time in a fixed order over a real gRPC channel.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import math
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pyarrow.parquet as pq

from feature_store.base import CounterDelta, StoredEvent
from feature_store.factory import open_store
from recsvc.bundle import Bundle, HybridArrays, publish, write_bundle
from recsvc.v1 import recommender_pb2 as pb
from recsvc.v1 import recommender_pb2_grpc as pb_grpc
from tests.serving.bundle_factory import DIM, N_ITEMS, N_USERS, make_bundle

AGES = ("18-24", "25-34", "35+")
THEMES = ("dark", "light", "photo")
TS_SEED = 11
TOLERANCE = 1e-5
ANSWERS = Path(__file__).with_name("answers.json")


# -- the bundle ------------------------------------------------------------------------


def golden_bundle() -> Bundle:
    """``make_bundle()`` with a hybrid model (only ``region=north`` and the ages are known
    features, so a southern cold user still gets regional popularity), an ``age`` column,
    artwork themes and the exact ALS fold-in (gram matrix + manifest parameters)."""
    base = make_bundle(seed=0)
    rng = np.random.default_rng(2024)
    names = np.array(["region=north", *(f"age={a}" for a in AGES)])
    hybrid = HybridArrays(
        user_feature_names=names,
        user_feature_embeddings=rng.normal(0, 0.4, (len(names), DIM)).astype(np.float32),
        user_feature_biases=rng.normal(0, 0.1, len(names)).astype(np.float32),
        item_representations=(
            base.item_factors + rng.normal(0, 0.1, base.item_factors.shape)
        ).astype(np.float32),
        item_biases=rng.normal(0, 0.1, N_ITEMS).astype(np.float32),
    )
    assert base.artwork is not None
    n_variants = len(base.artwork.variant_ids)
    artwork = dataclasses.replace(
        base.artwork,
        attributes={"theme": np.array([THEMES[v % len(THEMES)] for v in range(n_variants)])},
    )
    factors = base.item_factors.astype(np.float64)
    manifest = {
        "params": {"model": "golden"},
        "model": {
            "name": "als",
            "fold_in": {
                "kind": "als",
                "regularization": 0.05,
                "alpha": 2.0,
                "weighting": "bm25",
                "bm25_k1": 100.0,
                "bm25_b": 0.8,
            },
        },
    }
    return dataclasses.replace(
        base,
        manifest=manifest,
        user_features={
            **base.user_features,
            "age": np.array([AGES[u % len(AGES)] for u in range(N_USERS)]),
        },
        hybrid=hybrid,
        artwork=artwork,
        item_gram=factors.T @ factors,
    )


def publish_golden(root: Path) -> None:
    bundle = golden_bundle()

    def build(directory: Path, version: str) -> None:
        write_bundle(directory, dataclasses.replace(bundle, version=version))

    publish(root, build)


# -- the store -------------------------------------------------------------------------

PROFILES: list[tuple[str, dict[str, str]]] = [
    ("u003", {"region": "south"}),  # a known northern user whose stored profile moved them
    ("u010", {"age": "35+"}),
    ("new-north", {"region": "north", "age": "25-34"}),
    ("new-south", {"region": "south"}),
    ("new-age", {"age": "18-24"}),
]
# (user, item, type): recent events fold into the live vector (exact ALS step) and block
# the items; impressions do neither.
EVENTS: list[tuple[str, str, str]] = [
    ("u001", "i005", "purchase"),
    ("u001", "i013", "click"),
    ("u002", "i010", "add_to_cart"),
    ("u002", "i022", "click"),
    ("u005", "i007", "impression"),
    ("u009", "i033", "click"),
    ("new-events", "i041", "click"),
    ("new-events", "i045", "click"),
    ("new-events", "i049", "purchase"),
]


def seed_store(url: str) -> None:
    store = open_store(url)
    try:
        store.write_user_profiles(PROFILES)
        now = int(time.time() * 1000)
        store.record_events(
            [
                StoredEvent(f"golden-{n}", user, item, kind, now - 1000 * n)
                for n, (user, item, kind) in enumerate(EVENTS)
            ]
        )
        store.incr_counters(thompson_counters())
    finally:
        store.close()


def thompson_counters() -> list[CounterDelta]:
    """Impressions and clicks per variant, item-level and for the southern bucket, in the
    Thompson policy's stored counter layout (``bandit:ts:<item>[|<bucket>]``,
    fields ``<variant>:n`` / ``<variant>:c``)."""
    rng = np.random.default_rng(99)
    out = []
    for j in range(N_ITEMS):
        item = f"i{j:03d}"
        for v in range(1 + j % 3):
            variant = f"{item}-v{v}"
            shown = int(rng.integers(5, 60))
            clicks = int(rng.integers(0, shown // 2 + 1))
            for key in (f"bandit:ts:{item}", f"bandit:ts:{item}|region=south,segment="):
                out.append(CounterDelta(key, f"{variant}:n", float(shown)))
                out.append(CounterDelta(key, f"{variant}:c", float(clicks)))
    return out


EXPERIMENT = """\
name: golden-artwork
salt: golden-artwork-1
traffic: 1.0
segment: 'region == "south"'
variants:
  - {name: control, weight: 0.5}
  - {name: bandit, weight: 0.5, overrides: {bandit_policy: ts, k: 3}}
"""


# -- the calls -------------------------------------------------------------------------


def _ctx(region: str = "", **attributes: str) -> pb.Context:
    return pb.Context(region=region, attributes=attributes)


# (label, request fields). Users u000-u059 are known; even rows live in the north.
RECOMMEND: list[tuple[str, dict[str, Any]]] = [
    *[(f"known-{u}", {"user_id": f"u{u:03d}", "k": 5}) for u in range(0, 12)],
    ("known-k1", {"user_id": "u020", "k": 1}),
    ("known-k37", {"user_id": "u021", "k": 37}),
    ("known-k200", {"user_id": "u022", "k": 200}),
    ("known-category", {"user_id": "u024", "k": 8, "categories": ["games"]}),
    ("known-two-categories", {"user_id": "u025", "k": 12, "categories": ["books", "toys"]}),
    ("known-unknown-category", {"user_id": "u026", "k": 5, "categories": ["boats"]}),
    ("known-exclude", {"user_id": "u028", "k": 6, "exclude_item_ids": ["i000", "i004", "i008"]}),
    ("known-exclude-unknown-id", {"user_id": "u029", "k": 4, "exclude_item_ids": ["nope"]}),
    ("known-context-south", {"user_id": "u030", "k": 6, "context": _ctx("south")}),
    ("known-context-atlantis", {"user_id": "u032", "k": 6, "context": _ctx("atlantis")}),
    ("known-context-age", {"user_id": "u034", "k": 5, "context": _ctx("", age="35+")}),
    (
        "known-all-filters",
        {
            "user_id": "u036",
            "k": 9,
            "categories": ["music"],
            "exclude_item_ids": ["i002", "i006"],
            "context": _ctx("south"),
        },
    ),
    ("unknown-bare", {"user_id": "ghost", "k": 6}),
    ("unknown-north", {"user_id": "ghost-n", "k": 6, "context": _ctx("north")}),
    ("unknown-south", {"user_id": "ghost-s", "k": 6, "context": _ctx("south")}),
    ("unknown-atlantis", {"user_id": "ghost-a", "k": 6, "context": _ctx("atlantis")}),
    ("unknown-age", {"user_id": "ghost-age", "k": 6, "context": _ctx("", age="25-34")}),
    (
        "unknown-south-age",
        {"user_id": "ghost-sa", "k": 7, "context": _ctx("south", age="18-24", plan="gold")},
    ),
    ("unknown-unknown-feature", {"user_id": "ghost-f", "k": 5, "context": _ctx("", plan="x")}),
    (
        "unknown-south-category",
        {"user_id": "ghost-sc", "k": 5, "context": _ctx("south"), "categories": ["toys"]},
    ),
    (
        "unknown-south-exclude",
        {
            "user_id": "ghost-se",
            "k": 5,
            "context": _ctx("south"),
            "exclude_item_ids": ["i030", "i031"],
        },
    ),
    ("stored-north", {"user_id": "new-north", "k": 6}),
    ("stored-south", {"user_id": "new-south", "k": 6}),
    ("stored-age", {"user_id": "new-age", "k": 6}),
    ("stored-south-context-north", {"user_id": "new-south", "k": 6, "context": _ctx("north")}),
    ("stored-events", {"user_id": "new-events", "k": 6}),
    ("stored-events-context", {"user_id": "new-events", "k": 6, "context": _ctx("south")}),
    ("stored-events-category", {"user_id": "new-events", "k": 6, "categories": ["books"]}),
    ("unknown-k200", {"user_id": "ghost-big", "k": 200, "context": _ctx("north")}),
    # the experiment (southern users): control, or Thompson artwork with k=3
    *[(f"experiment-{u}", {"user_id": f"u{u:03d}", "k": 5}) for u in range(41, 60, 2)],
    *[
        (f"experiment-ghost-{n}", {"user_id": f"ghost-x{n}", "k": 5, "context": _ctx("south")})
        for n in range(6)
    ],
]

RANK_ITEMS: list[tuple[str, dict[str, Any]]] = [
    ("known", {"user_id": "u004", "item_ids": ["i000", "i001", "i002", "i003", "i100", "zzz"]}),
    ("known-events", {"user_id": "u001", "item_ids": ["i005", "i013", "i017", "i021", "i099"]}),
    (
        "unknown-south",
        {"user_id": "ghost", "item_ids": ["i030", "i000", "i150"], "context": _ctx("south")},
    ),
    (
        "unknown-north-hybrid",
        {"user_id": "ghost", "item_ids": ["i030", "i000", "i150"], "context": _ctx("north")},
    ),
    (
        "unknown-age",
        {"user_id": "ghost", "item_ids": ["i001", "i002", "i003"], "context": _ctx("", age="35+")},
    ),
    ("unknown-nothing", {"user_id": "ghost", "item_ids": ["i001", "i002", "nope", "i003"]}),
    ("stored-events", {"user_id": "new-events", "item_ids": ["i041", "i042", "i043", "i044"]}),
]

SELECT_ARTWORK: list[tuple[str, dict[str, Any]]] = [
    ("default-known", {"user_id": "u000", "item_ids": ["i000", "i001", "i002", "i003", "nope"]}),
    ("default-south-known", {"user_id": "u041", "item_ids": ["i030", "i031", "i032"]}),
    # southern users are in the experiment: control (default artwork) or Thompson sampling
    *[
        (
            f"experiment-ghost-{n}",
            {
                "user_id": f"ghost-x{n}",
                "item_ids": ["i030", "i031", "i032", "i034", "i035", "i050", "i051", "nope"],
                "context": _ctx("south"),
            },
        )
        for n in range(6)
    ],
    ("experiment-stored", {"user_id": "new-south", "item_ids": ["i053", "i041", "i048", "i002"]}),
]

SIMILAR: list[tuple[str, dict[str, Any]]] = [
    ("i000-k5", {"item_id": "i000", "k": 5}),
    ("i031-k3", {"item_id": "i031", "k": 3}),
    ("i159-k1", {"item_id": "i159", "k": 1}),
    ("i077-k40", {"item_id": "i077", "k": 40}),
]

INVALID: list[tuple[str, str, dict[str, Any]]] = [
    ("recommend-k0", "Recommend", {"user_id": "u000", "k": 0}),
    ("similar-unknown", "SimilarItems", {"item_id": "nope", "k": 3}),
    ("similar-k0", "SimilarItems", {"item_id": "i000", "k": 0}),
    ("rank-empty", "RankItems", {"user_id": "u000"}),
    # An empty user_id is refused (an anonymous visitor is sent as a session id).
    ("recommend-anonymous", "Recommend", {"user_id": "", "k": 4}),
    ("rank-anonymous", "RankItems", {"user_id": "", "item_ids": ["i005", "i006"]}),
    ("artwork-anonymous", "SelectArtwork", {"user_id": "", "item_ids": ["i005", "i006"]}),
]

_REQUESTS = {
    "Recommend": pb.RecommendRequest,
    "RankItems": pb.RankItemsRequest,
    "SelectArtwork": pb.SelectArtworkRequest,
    "SimilarItems": pb.SimilarItemsRequest,
}


def _scored(items: Any) -> list[list[Any]]:
    return [[i.item_id, float(i.score)] for i in items]


def rpc_answers(stub: pb_grpc.RecommenderStub) -> dict[str, Any]:
    out: dict[str, Any] = {}
    rec = out["Recommend"] = {}
    for label, fields in RECOMMEND:
        reply = stub.Recommend(pb.RecommendRequest(**fields), timeout=10)
        rec[label] = {
            "items": [
                [
                    i.item_id,
                    float(i.score),
                    i.reason,
                    i.artwork_variant_id,
                    float(i.artwork_propensity),
                ]
                for i in reply.items
            ],
            "experiment": [reply.experiment, reply.variant],
            "degraded": reply.degraded,
        }
    ranked = out["RankItems"] = {}
    for label, fields in RANK_ITEMS:
        ranked[label] = _scored(stub.RankItems(pb.RankItemsRequest(**fields), timeout=10).items)
    art = out["SelectArtwork"] = {}
    for label, fields in SELECT_ARTWORK:
        reply = stub.SelectArtwork(pb.SelectArtworkRequest(**fields), timeout=10)
        art[label] = [[c.item_id, c.variant_id, float(c.propensity)] for c in reply.choices]
    similar = out["SimilarItems"] = {}
    for label, fields in SIMILAR:
        similar[label] = _scored(
            stub.SimilarItems(pb.SimilarItemsRequest(**fields), timeout=10).items
        )
    errors = out["errors"] = {}
    for label, method, fields in INVALID:
        try:
            getattr(stub, method)(_REQUESTS[method](**fields), timeout=10)
            errors[label] = "OK"
        except grpc.RpcError as exc:
            errors[label] = exc.code().name
    return out


# -- export and audience ---------------------------------------------------------------


def _cli(*argv: Any) -> None:
    from recsvc.cli import main

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        rc = main([str(a) for a in argv])
    if rc != 0:
        raise RuntimeError(f"recsvc {' '.join(map(str, argv))} exited {rc}")


def _rows(path: Path, columns: list[str]) -> list[list[Any]]:
    table = pq.read_table(path, columns=columns)
    return [list(row.values()) for row in table.to_pylist()]


def _counts(path: Path) -> dict[str, Any]:
    manifest = json.loads(Path(f"{path}.manifest.json").read_text())
    return dict(manifest["counts"])


EXPORT_COLUMNS = ["user_id", "rank", "item_id", "score", "artwork_variant_id"]
AUDIENCE_COLUMNS = ["item_id", "rank", "user_id", "score"]


def batch_answers(root: Path, store_url: str, work: Path) -> dict[str, Any]:
    users = work / "users.csv"
    users.write_text(
        "user_id,region,age\n"
        "u000,,\n"
        "u001,,\n"  # events: folded, purchase blocked
        "u003,,\n"  # stored profile moved them south
        "u006,south,\n"  # the file moves a northern user south
        "u007,,25-34\n"
        "u013,atlantis,\n"
        "new-north,,\n"
        "new-south,,\n"
        "new-events,,\n"
        "file-north,north,\n"
        "file-south,south,35+\n"
        "file-age,,18-24\n"
        "file-nothing,,\n"
        "u000,,\n"  # a duplicate
    )
    suppress = work / "suppress.csv"
    suppress.write_text(
        "user_id,item_id\nu007,\nu000,i000\nu000,i004\nu013,i001\nu002,i002\nu011,\n"
    )
    out: dict[str, Any] = {}
    runs: dict[str, list[str | int | Path]] = {
        "all-known-k5": ["--k", 5],
        "segment-south-k4": ["--k", 4, "--segment", 'region == "south" and age != "35+"'],
        "users-file-store-ts": [
            "--k",
            6,
            "--users",
            users,
            "--feature-store",
            store_url,
            "--suppress",
            suppress,
            "--policy",
            "ts",
            "--chunk-size",
            3,
        ],
        "users-file-segment-include-seen": [
            "--k",
            7,
            "--users",
            users,
            "--segment",
            'region == "north" or age == "18-24"',
            "--include-seen",
            "--chunk-size",
            4,
        ],
        "suppress-k3": ["--k", 3, "--suppress", suppress, "--chunk-size", 7],
    }
    for label, extra in runs.items():
        path = work / f"export-{label}.parquet"
        # history only, as recorded (export and audience read serve's store by default)
        _cli("export", "--artifacts", root, "--out", path, "--no-progress",
             "--feature-store", "none", *extra)  # fmt: skip
        out[f"export:{label}"] = {
            "rows": _rows(path, EXPORT_COLUMNS),
            "counts": _counts(path),
        }
    items = work / "items.txt"
    items.write_text("i000\ni001\ni030\ni035\ni077\ni159\nnot-an-item\n")
    audiences: dict[str, list[str | int | Path]] = {
        "items-top5": ["--top", 5, "--items", items],
        "filter-segment-suppress": [
            "--top",
            4,
            "--item-filter",
            'category in ("books", "toys")',
            "--segment",
            'age != "18-24"',
            "--suppress",
            suppress,
        ],
        "items-include-seen-top60": ["--top", 60, "--items", items, "--include-seen"],
    }
    for label, extra in audiences.items():
        path = work / f"audience-{label}.parquet"
        _cli("audience", "--artifacts", root, "--out", path, "--no-progress",
             "--feature-store", "none", *extra)  # fmt: skip
        rows = _rows(path, AUDIENCE_COLUMNS)
        if label.endswith("top60"):  # keep the file small: the ranks and the tail
            rows = [r for r in rows if r[1] <= 3 or r[1] >= 55]
        out[f"audience:{label}"] = {"rows": rows, "counts": _counts(path)}
    return out


# -- the whole run ---------------------------------------------------------------------


@contextlib.contextmanager
def _server(root: Path, store_url: str) -> Iterator[pb_grpc.RecommenderStub]:
    from recsvc.serving.server import ServerThread
    from recsvc.settings import ServingSettings

    # Field(default, ...) reads as required to mypy without the pydantic plugin
    settings = ServingSettings(
        artifacts=root,
        host="127.0.0.1",
        port=0,
        feature_store=store_url,
        # The recorded answers are the default artwork's (and the experiment arm's seeded
        # Thompson sampling): the server's own default, the bandit, is not deterministic.
        bandit_policy="default",
        bandit_params={"ts": {"seed": TS_SEED, "refresh_ms": 0}},
        watch_interval_s=30.0,
        exposure_flush_s=0.05,
        grace_s=1.0,
    )
    server = ServerThread(settings).start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield pb_grpc.RecommenderStub(channel)
    finally:
        channel.close()
        server.stop()


def run_scenario(work: Path) -> dict[str, Any]:
    """Every answer of the mix, built from nothing under ``work``."""
    root = work / "bundles"
    publish_golden(root)
    store_url = f"sqlite:///{work / 'store.sqlite'}"
    seed_store(store_url)
    experiment = work / "experiment.yaml"
    experiment.write_text(EXPERIMENT)
    _cli("experiments", "create", "--file", experiment, "--feature-store", store_url)
    with _server(root, store_url) as stub:
        answers = rpc_answers(stub)
    answers.update(batch_answers(root, store_url, work))
    return answers


def differences(expected: Any, actual: Any, path: str = "", limit: int = 20) -> list[str]:
    """Where ``actual`` differs from ``expected``: floats within ``TOLERANCE``, everything
    else (order included) exactly."""
    out: list[str] = []

    def walk(e: Any, a: Any, where: str) -> None:
        if len(out) >= limit:
            return
        if isinstance(e, float) or isinstance(a, float):
            if not (
                isinstance(e, int | float)
                and isinstance(a, int | float)
                and not isinstance(e, bool)
                and not isinstance(a, bool)
                and math.isclose(e, a, rel_tol=TOLERANCE, abs_tol=TOLERANCE)
            ):
                out.append(f"{where}: expected {e!r}, got {a!r}")
        elif isinstance(e, dict) and isinstance(a, dict):
            for key in sorted(set(e) | set(a)):
                if key not in a or key not in e:
                    out.append(f"{where}/{key}: {'missing' if key not in a else 'unexpected'}")
                else:
                    walk(e[key], a[key], f"{where}/{key}")
        elif isinstance(e, list) and isinstance(a, list):
            if len(e) != len(a):
                out.append(f"{where}: {len(a)} entries, expected {len(e)}: {a!r} vs {e!r}")
            else:
                for i, (x, y) in enumerate(zip(e, a, strict=True)):
                    walk(x, y, f"{where}[{i}]")
        elif e != a:
            out.append(f"{where}: expected {e!r}, got {a!r}")

    walk(expected, actual, path)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", type=Path, help="write the answers here (JSON)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="recsvc-golden-") as tmp:
        answers = run_scenario(Path(tmp))
    text = json.dumps(answers, indent=None, separators=(",", ":"), sort_keys=True)
    if args.write:
        args.write.write_text(text + "\n")
        print(f"wrote {args.write} ({len(text)} bytes)")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
