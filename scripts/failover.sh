#!/usr/bin/env bash
# Measures what the loss of one Qdrant node costs wenke in server mode
# (issue 8: "what fails over and how", backed by a measurement).
#
# Starts a three-node Qdrant cluster on this machine (cluster mode, one
# storage directory per node) behind a TCP balancer (nginx's stream
# module, round robin, as the compose file's `qdrant` alias spreads
# connections over the nodes), imports the demo KB into collections of
# 3 shards with replication factor 2, and serves it from one wenke
# instance (sessions in Redis). Then, under the realistic chat load:
#
#   1. at a third of the run, node KILL_NODE (2; `leader` for the node
#      leading the cluster's consensus at that moment) is killed with
#      SIGKILL;
#   2. while it is down, another process publishes a new entry (`wenke kb
#      import --approve-as`; up to three attempts, as an editor would try
#      again), and the script asks the serving instance until its reply
#      cites that entry;
#   3. at two thirds, the node is started again on its storage;
#   4. at the end, the script waits until every replica of the entries
#      collection is active again.
#
# It prints the load's report (replies, errors, latency percentiles), how
# long the publish took and when its entry was answered, and how long the
# replicas took to catch up.
#
#   QDRANT_BIN=/path/to/qdrant scripts/failover.sh [SECONDS]
#
# Needs a Qdrant binary (QDRANT_BIN), nginx with the stream module, the
# Redis on this machine, curl, python3 and a built wenke (cargo build --workspace
# --bin wenke). Ports: 6333-6355 (nodes), 6400 (balancer), 8098 (wenke).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-90}
clients=${CLIENTS:-32}
kill_node=${KILL_NODE:-2}
qdrant=${QDRANT_BIN:?set QDRANT_BIN to a Qdrant server binary}
wenke=target/debug/wenke
redis_url=${REDIS_URL:-redis://127.0.0.1:6379}
work=$(mktemp -d /tmp/wenke-failover.XXXXXX)
prefix="failover_$(date +%s)_"
store_args=(--qdrant-url http://127.0.0.1:6400 --collection-prefix "$prefix"
  --qdrant-shards 3 --qdrant-replication-factor 2
  --redis-url "$redis_url" --redis-prefix "wenke-failover-$(date +%s):")
questions=()
for file in kb/eval/dev-*.jsonl; do questions+=(--questions "$file"); done

[ -x "$wenke" ] || { echo "failover: build first: cargo build --workspace --bin wenke" >&2; exit 1; }
command -v nginx > /dev/null || { echo "failover: needs nginx (apt-get install nginx)" >&2; exit 1; }

declare -A node_pids=()
other_pids=()
cleanup() {
  for pid in "${other_pids[@]}" "${node_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
  echo "failover: logs and storage left in $work" >&2
}
trap cleanup EXIT

http_port() { echo $((6333 + 10 * ($1 - 1))); }
grpc_port() { echo $((6334 + 10 * ($1 - 1))); }
p2p_port() { echo $((6335 + 10 * ($1 - 1))); }

# Starts node $1 on its storage; node 1 founds the cluster, the others join it.
start_node() {
  local node=$1 join=()
  [ "$node" = 1 ] || join=(--bootstrap "http://127.0.0.1:$(p2p_port 1)")
  mkdir -p "$work/node$node"
  (cd "$work/node$node" && exec env \
    QDRANT__SERVICE__HOST=127.0.0.1 \
    QDRANT__SERVICE__HTTP_PORT="$(http_port "$node")" \
    QDRANT__SERVICE__GRPC_PORT="$(grpc_port "$node")" \
    QDRANT__CLUSTER__ENABLED=true \
    QDRANT__CLUSTER__P2P__PORT="$(p2p_port "$node")" \
    QDRANT__STORAGE__STORAGE_PATH="$work/node$node/storage" \
    QDRANT__STORAGE__SNAPSHOTS_PATH="$work/node$node/snapshots" \
    QDRANT__TELEMETRY_DISABLED=true \
    "$qdrant" --uri "http://127.0.0.1:$(p2p_port "$node")" "${join[@]}" \
    >> "$work/node$node.log" 2>&1) &
  node_pids[$node]=$!
  for _ in $(seq 1 120); do
    if curl -fsS "http://127.0.0.1:$(http_port "$node")/readyz" > /dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  echo "failover: node $node did not become ready; see $work/node$node.log" >&2
  exit 1
}

# The number of peers node 1 knows.
peers() {
  curl -fsS "http://127.0.0.1:$(http_port 1)/cluster" |
    python3 -c 'import json, sys; print(len(json.load(sys.stdin)["result"]["peers"]))'
}

# Replicas of the entries collection that are not active, as node 1 sees
# them (its local shards and the remote ones).
inactive_replicas() {
  curl -fsS "http://127.0.0.1:$(http_port 1)/collections/${prefix}entries/cluster" |
    python3 -c 'import json, sys
r = json.load(sys.stdin)["result"]
shards = r["local_shards"] + r["remote_shards"]
print(sum(1 for s in shards if s["state"] != "Active"))'
}

start_node 1
start_node 2
start_node 3
for _ in $(seq 1 60); do [ "$(peers)" -ge 3 ] && break; sleep 0.5; done
echo "failover: cluster of $(peers) nodes"

# The node that leads the cluster's consensus now (its number, 1-3).
leader() {
  curl -fsS "http://127.0.0.1:$(http_port 1)/cluster" |
    python3 -c 'import json, sys
r = json.load(sys.stdin)["result"]
uri = r["peers"][str(r["raft_info"]["leader"])]["uri"]
print((int(uri.rstrip("/").rsplit(":", 1)[1]) - 6335) // 10 + 1)'
}

stream_module=""
for module in /usr/lib/nginx/modules/ngx_stream_module.so /usr/share/nginx/modules/ngx_stream_module.so; do
  [ -f "$module" ] && stream_module="load_module $module;" && break
done
cat > "$work/nginx.conf" <<EOF
$stream_module
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events {}
stream {
  upstream qdrant_grpc {
    server 127.0.0.1:$(grpc_port 1) max_fails=1 fail_timeout=5s;
    server 127.0.0.1:$(grpc_port 2) max_fails=1 fail_timeout=5s;
    server 127.0.0.1:$(grpc_port 3) max_fails=1 fail_timeout=5s;
  }
  server {
    listen 127.0.0.1:6400;
    proxy_pass qdrant_grpc;
    proxy_connect_timeout 1s;
  }
}
EOF
nginx -c "$work/nginx.conf"

echo "failover: importing the demo KB (3 shards, replication factor 2)"
"$wenke" "${store_args[@]}" kb import kb/demo/entries-*.jsonl --approve-as 示例审核 > "$work/import.log" 2>&1

"$wenke" "${store_args[@]}" --rate-limit 1000000 serve --addr 127.0.0.1:8098 --ip-limit 0 > "$work/wenke.log" 2>&1 &
other_pids+=("$!")
for _ in $(seq 1 240); do
  curl -fsS http://127.0.0.1:8098/readyz > /dev/null 2>&1 && break
  sleep 0.5
done

"$wenke" bench chat --url http://127.0.0.1:8098 --clients "$clients" --seconds "$seconds" \
  --mix realistic "${questions[@]}" > "$work/bench.txt" 2>&1 &
bench=$!
other_pids+=("$bench")

sleep $((seconds / 3))
if [ "$kill_node" = leader ]; then kill_node=$(leader); echo "failover: node $kill_node leads the consensus"; fi
kill -9 "${node_pids[$kill_node]}"
wait "${node_pids[$kill_node]}" 2>/dev/null || true
killed_at=$(date +%s.%N)
echo "failover: node $kill_node killed"

marker="故障演练$(date +%s)"
cat > "$work/new-entry.jsonl" <<EOF
{"external_key":"failover-drill","question":"魔芋软腐病在多雨季节怎么预防？","alt_questions":["魔芋烂根烂茎怎么办","魔芋软腐病用什么药"],"answer":"选用无病种芋，雨季及时开沟排水，发病初期拔除病株并在病穴撒石灰消毒。","category":"农业种植","tags":["魔芋","软腐病"],"crops":["魔芋"],"regions":[],"source":{"organisation":"示例内容，未经专家审核（$marker）","document":null,"url":null}}
EOF
# An editor whose publish fails tries again: up to three attempts, 2 s apart.
published_at=""
for attempt in 1 2 3; do
  publish_started=$(date +%s.%N)
  if "$wenke" "${store_args[@]}" kb import "$work/new-entry.jsonl" --approve-as 示例审核 > "$work/publish-$attempt.log" 2>&1; then
    published_at=$(date +%s.%N)
    echo "failover: publish attempt $attempt, $(awk -v k="$killed_at" -v a="$publish_started" 'BEGIN {printf "%.1f", a - k}') s after the kill: done in $(awk -v a="$publish_started" -v b="$published_at" 'BEGIN {printf "%.1f", b - a}') s (a new process: model load included)"
    break
  fi
  echo "failover: publish attempt $attempt, $(awk -v k="$killed_at" -v a="$publish_started" 'BEGIN {printf "%.1f", a - k}') s after the kill, failed after $(awk -v a="$publish_started" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}') s: $(grep -m1 '^Error' "$work/publish-$attempt.log" | cut -c1-200)"
  sleep 2
done
if [ -n "$published_at" ]; then
  answered=""
  for _ in $(seq 1 50); do
    if curl -fsS http://127.0.0.1:8098/api/chat -H 'content-type: application/json' \
      -d '{"user_id":"failover-check","text":"魔芋软腐病在多雨季节怎么预防？"}' | grep -q "$marker"; then
      answered=$(date +%s.%N)
      break
    fi
    sleep 0.2
  done
  if [ -n "$answered" ]; then
    echo "failover: the serving instance answered the new entry $(awk -v a="$published_at" -v b="$answered" 'BEGIN {printf "%.2f", b - a}') s after its publish"
  else
    echo "failover: the serving instance did not answer the new entry within 10 s"
  fi
fi

now=$(date +%s.%N)
rest=$(awk -v k="$killed_at" -v n="$now" -v s="$seconds" 'BEGIN {r = k + s / 3 - n; print (r > 0 ? r : 0)}')
sleep "$rest"
start_node "$kill_node"
restarted=$(date +%s.%N)
echo "failover: node $kill_node started again"

wait "$bench" || true
cat "$work/bench.txt"
for _ in $(seq 1 240); do
  [ "$(inactive_replicas)" = 0 ] && break
  sleep 0.5
done
echo "failover: replicas of ${prefix}entries not active: $(inactive_replicas), $(awk -v a="$restarted" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}') s after the restart"
echo "failover: error lines in the wenke log: $(grep -c "稍后再试\|ERROR" "$work/wenke.log" || true)"
