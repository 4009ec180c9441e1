#!/usr/bin/env bash
# The deployment of docs/deploy.md as plain processes on one machine: a Redis Cluster of
# 3 masters + 3 replicas and 2 `recsvc serve` replicas sharing it and one bundle root.
#
#   docs/deploy/local-cluster.sh BUNDLE_ROOT            # run until Ctrl-C
#   docs/deploy/local-cluster.sh BUNDLE_ROOT --check    # start, check, stop (exit 0 = ok)
#
# --check: both replicas report SERVING, answer Recommend, and an event id recorded through
# one is a duplicate through the other. Env: BASE_PORT (default 17001; the 6 Redis ports
# are BASE_PORT..+5, their bus ports +10000), GRPC_PORT (default 50061; replica 2 = +1),
# RECSVC (default: recsvc on PATH, else .venv/bin/recsvc).
set -euo pipefail

root=${1:?usage: local-cluster.sh BUNDLE_ROOT [--check]}
mode=${2:-run}
base=${BASE_PORT:-17001}
grpc=${GRPC_PORT:-50061}
recsvc=${RECSVC:-$(command -v recsvc || echo .venv/bin/recsvc)}
python=$(dirname "$recsvc")/python
[ -x "$python" ] || python=python3
work=$(mktemp -d "${TMPDIR:-/tmp}/recsvc-local-cluster.XXXXXX")
pids=()

cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

nodes=()
for i in 0 1 2 3 4 5; do
  port=$((base + i))
  mkdir -p "$work/redis-$port"
  redis-server --port "$port" --bind 127.0.0.1 --dir "$work/redis-$port" \
    --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
    --cluster-require-full-coverage no --cluster-replica-validity-factor 0 \
    --appendonly yes --appendfsync everysec --save "" \
    --logfile "$work/redis-$port/redis.log" &
  pids+=($!)
  nodes+=("127.0.0.1:$port")
done
for n in "${nodes[@]}"; do
  for _ in $(seq 1 100); do redis-cli -p "${n#*:}" ping >/dev/null 2>&1 && break; sleep 0.1; done
done
redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$work/create.log"
for _ in $(seq 1 100); do
  redis-cli -p "$base" cluster info | grep -q cluster_state:ok && break; sleep 0.2
done

store="redis+cluster://${nodes[0]},${nodes[1]},${nodes[2]}?prefix=recsvc-local:"
for r in 0 1; do
  "$recsvc" serve --artifacts "$root" --host 127.0.0.1 --port $((grpc + r)) \
    --feature-store "$store" --grace 2 --log-level WARNING >"$work/recsvc-$r.log" 2>&1 &
  pids+=($!)
done
echo "store: $store"
echo "replicas: 127.0.0.1:$grpc 127.0.0.1:$((grpc + 1))"

"$python" - "$grpc" "$mode" <<'PY'
import sys, time, uuid
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from recsvc.v1 import recommender_pb2 as pb, recommender_pb2_grpc as pb_grpc

base, mode = int(sys.argv[1]), sys.argv[2]
stubs = []
for port in (base, base + 1):
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    health = health_pb2_grpc.HealthStub(channel)
    for _ in range(300):
        try:
            if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                break
        except grpc.RpcError:
            pass
        time.sleep(0.2)
    else:
        sys.exit(f"replica on port {port} did not become SERVING")
    stubs.append(pb_grpc.RecommenderStub(channel))
print("both replicas SERVING")
if mode == "--check":
    for stub in stubs:
        reply = stub.Recommend(pb.RecommendRequest(user_id="check-user", k=3), timeout=5)
        assert reply.items and not reply.degraded, reply
    event = pb.Event(event_id=uuid.uuid4().hex, user_id="check-user",
                     item_id=reply.items[0].item_id, type=pb.EVENT_TYPE_PURCHASE,
                     timestamp_ms=int(time.time() * 1000))
    first = stubs[0].RecordEvents(pb.RecordEventsRequest(events=[event]), timeout=5)
    again = stubs[1].RecordEvents(pb.RecordEventsRequest(events=[event]), timeout=5)
    assert first.accepted == 1 and again.accepted == 0, (first, again)
    print("check ok: Recommend on both, event id idempotent across replicas")
PY
if [ "$mode" != "--check" ]; then
  echo "running; Ctrl-C stops everything"
  wait
fi
