"""A serving process never loads the training stack.

``recsvc serve`` runs in a fresh interpreter (this test process has lightfm, implicit and
pandas loaded already) on a bundle that carries a LightFM hybrid (``hybrid.npz``), with the
artwork bandit and a SQLite feature store. A thread of the same process asks it, over a
real gRPC channel on a TCP port, for a known user and for a cold-start visitor known only by
region, whose answer comes from the hybrid's arrays. After the server has drained and
stopped, the process reports which of lightfm, implicit, pandas and training it imported:
none may be there, since the bundle's numpy arrays are all the server needs.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recsvc.bundle import HybridArrays, load_bundle, publish, write_bundle
from recsvc.bundle.scoring import cold_start_scores, cold_user_vector
from recsvc.serving.workers import free_port
from tests.serving.bundle_factory import DIM, N_ITEMS, REGIONS, make_bundle

ROOT = Path(__file__).resolve().parents[2]
TRAINING_STACK = ("lightfm", "implicit", "pandas", "training")
# Loaded by any process that served these requests: shows the module list is that process's.
SERVED_BY = (
    "recsvc.serving.servicer", "recsvc.bundle.scoring", "recsvc.bandit.linear",
    "feature_store.sqlite", "faiss",
)  # fmt: skip

# Runs in the child: `recsvc serve` in the main thread (signals), the client in a thread.
CHILD = """
import json, os, signal, sys, threading

root, port, store, region, known = sys.argv[1:6]
answers = {}

def ask():
    try:
        import grpc
        from recsvc.v1 import recommender_pb2 as pb, recommender_pb2_grpc as pb_grpc

        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=60)
            stub = pb_grpc.RecommenderStub(channel)
            for name, request in (
                ("cold", pb.RecommendRequest(user_id="new-visitor", k=5,
                                             context=pb.Context(region=region))),
                ("known", pb.RecommendRequest(user_id=known, k=5)),
            ):
                reply = stub.Recommend(request, timeout=30)
                answers[name] = [(i.item_id, i.score, i.reason, i.artwork_variant_id)
                                 for i in reply.items]
    except BaseException as exc:
        answers["error"] = repr(exc)
    finally:
        os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=ask, daemon=True).start()
from recsvc.cli import main

status = main(["serve", "--artifacts", root, "--host", "127.0.0.1", "--port", port,
               "--feature-store", store, "--bandit-policy", "lints", "--grace", "1"])
modules = sorted(m for m in sys.modules if m.split(".")[0] in {STACK})
served_by = sorted(m for m in {SERVED_BY} if m in sys.modules)
print(json.dumps({"status": status, "answers": answers, "modules": modules,
                  "served_by": served_by}))
""".replace("{STACK}", repr(set(TRAINING_STACK))).replace("{SERVED_BY}", repr(set(SERVED_BY)))


def hand_made_hybrid(seed: int = 3) -> HybridArrays:
    """Region features only; item representations unrelated to regional popularity, so the
    cold-start order is the hybrid's, not the popularity table's."""
    rng = np.random.default_rng(seed)
    names = np.array([f"region={r}" for r in REGIONS])
    return HybridArrays(
        user_feature_names=names,
        user_feature_embeddings=rng.normal(0, 1, (len(names), DIM)).astype(np.float32),
        user_feature_biases=np.zeros(len(names), np.float32),
        item_representations=rng.normal(0, 1, (N_ITEMS, DIM)).astype(np.float32),
        item_biases=rng.normal(0, 0.1, N_ITEMS).astype(np.float32),
    )


@pytest.fixture(scope="module")
def hybrid_bundle_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hybrid-bundle")
    bundle = dataclasses.replace(make_bundle(), hybrid=hand_made_hybrid())
    publish(
        root, lambda tmp, version: write_bundle(tmp, dataclasses.replace(bundle, version=version))
    )
    return root


def serve_and_ask(root: Path, store: str, region: str, known: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(root), str(free_port()), store, region, known],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert "error" not in result["answers"], result["answers"]["error"]
    assert result["status"] == 0
    assert result["served_by"] == sorted(SERVED_BY)
    return result


def check_cold_answer(root: Path, region: str, answer: list) -> None:
    """The cold-start items are scored by the source training chose
    (``cold_start_scores``), or, for a bundle without that choice, by its hybrid: item
    representation · the region's feature vector + item bias (the user's own bias, equal for
    every item, is left out of the served score)."""
    bundle = load_bundle(root)
    assert bundle.hybrid is not None and (bundle.path / "hybrid.npz").is_file()
    if bundle.cold_start is not None:
        expected = cold_start_scores(bundle, {"region": region})
        profile = bundle.cold_start.source != "popularity"
    else:
        vector, _ = cold_user_vector(bundle.hybrid, {"region": region})
        assert vector.any()  # the hybrid knows the region
        expected = bundle.hybrid.item_representations @ vector + bundle.hybrid.item_biases
        profile = True
    assert len(answer) == 5
    for item, score, reason, _ in answer:
        if profile:
            assert reason == "recommended for people like you"  # the profile source
        assert score == pytest.approx(float(expected[bundle.item_index[item]]), rel=1e-4, abs=1e-5)


def test_serving_a_hybrid_bundle_imports_no_training_stack(
    hybrid_bundle_root: Path, tmp_path: Path
) -> None:
    result = serve_and_ask(
        hybrid_bundle_root, f"sqlite:///{tmp_path / 'store.sqlite'}", "north", "u001"
    )
    check_cold_answer(hybrid_bundle_root, "north", result["answers"]["cold"])
    assert len(result["answers"]["known"]) == 5
    assert all(variant for *_, variant in result["answers"]["cold"])  # the bandit chose artwork
    assert result["modules"] == []


@pytest.mark.slow
def test_serving_a_trained_bundle_imports_no_training_stack(
    trained_bundle_root: Path, tmp_path: Path
) -> None:
    """The same with the bundle ``recsvc train`` writes (its hybrid is a real LightFM's)."""
    bundle = load_bundle(trained_bundle_root)
    region, known = str(bundle.region_names[0]), str(bundle.user_ids[0])
    result = serve_and_ask(
        trained_bundle_root, f"sqlite:///{tmp_path / 'store.sqlite'}", region, known
    )
    check_cold_answer(trained_bundle_root, region, result["answers"]["cold"])
    assert result["modules"] == []
