#!/usr/bin/env bash
# Measures how throughput grows from one wenke instance to two when the
# instances do not share CPU (issue 8: two instances ≥ 1.7× one).
#
# One machine cannot give each instance its own machine, so each instance
# gets its own slice of one: a cgroup pinned to its own core (instance 1 on
# core 0, instance 2 on core 1) with a CPU quota, 35 % of a core by default,
# so the shared parts keep most of both cores.
# What is left of both cores runs the load generator and the shared stores
# (Redis, a Qdrant server), which are not limited. The run with one instance
# and the run with two then differ only in the wenke CPU on offer, and the
# script prints the CPU each instance really used, so a run in which the
# load generator or a store starved an instance shows itself.
#
# Both runs send the realistic mix (`wenke bench chat --mix realistic`) from
# one load generator with CLIENTS (64) clients, so two throttled instances
# have work queued, every request to the next instance in
# turn as a round-robin balancer would, so follow-ups and filing forms
# continue across instances: run it in server mode, where sessions live in
# Redis and the knowledge base on a Qdrant server, e.g.
#
#   S="--qdrant-url http://127.0.0.1:6334 --collection-prefix scale_ \
#      --redis-url redis://127.0.0.1:6379 --redis-prefix wenke-scale:"
#   target/debug/wenke $S kb import kb/demo/entries-*.jsonl --approve-as 示例审核
#   WENKE_STORE_ARGS="$S" scripts/scaleout.sh [SECONDS] [QUOTA_PERCENT]
#
# Each run is preceded by WARMUP_SECONDS (30) of the same load, not counted.
#
# Needs root, two cores and cgroup v1 (cpu, cpuacct, cpuset) or v2.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
quota_percent=${2:-35}
warmup_seconds=${WARMUP_SECONDS:-30}
clients=${CLIENTS:-64}
store_args=${WENKE_STORE_ARGS:?set WENKE_STORE_ARGS to the store options every instance gets, e.g. --qdrant-url … --redis-url …}
wenke=target/debug/wenke
period_us=100000
quota_us=$((period_us * quota_percent / 100))
ports=(8201 8202)
questions=()
for file in kb/eval/dev-*.jsonl; do questions+=(--questions "$file"); done

[ -x "$wenke" ] || { echo "scaleout: build first: cargo build --workspace --bin wenke" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "scaleout: needs root to create cgroups" >&2; exit 1; }

if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
  cgroup_version=2
  echo "+cpu +cpuset" > /sys/fs/cgroup/cgroup.subtree_control
else
  cgroup_version=1
fi

# Creates the cgroup of instance $1 on core $2.
make_cgroup() {
  local name="wenke-scale-$1" core=$2
  if [ "$cgroup_version" = 2 ]; then
    mkdir -p "/sys/fs/cgroup/$name"
    echo "$quota_us $period_us" > "/sys/fs/cgroup/$name/cpu.max"
    echo "$core" > "/sys/fs/cgroup/$name/cpuset.cpus"
  else
    mkdir -p "/sys/fs/cgroup/cpu/$name" "/sys/fs/cgroup/cpuacct/$name" "/sys/fs/cgroup/cpuset/$name"
    echo "$period_us" > "/sys/fs/cgroup/cpu/$name/cpu.cfs_period_us"
    echo "$quota_us" > "/sys/fs/cgroup/cpu/$name/cpu.cfs_quota_us"
    echo "$core" > "/sys/fs/cgroup/cpuset/$name/cpuset.cpus"
    cat /sys/fs/cgroup/cpuset/cpuset.mems > "/sys/fs/cgroup/cpuset/$name/cpuset.mems"
  fi
}

# The files a process is moved into to join instance $1's cgroup.
cgroup_procs() {
  local name="wenke-scale-$1"
  if [ "$cgroup_version" = 2 ]; then
    echo "/sys/fs/cgroup/$name/cgroup.procs"
  else
    echo "/sys/fs/cgroup/cpu/$name/cgroup.procs /sys/fs/cgroup/cpuacct/$name/cgroup.procs /sys/fs/cgroup/cpuset/$name/cgroup.procs"
  fi
}

# CPU time used so far by instance $1's cgroup, in milliseconds.
cpu_ms() {
  local name="wenke-scale-$1"
  if [ "$cgroup_version" = 2 ]; then
    awk '/^usage_usec/ {print int($2 / 1000)}' "/sys/fs/cgroup/$name/cpu.stat"
  else
    echo $(( $(cat "/sys/fs/cgroup/cpuacct/$name/cpuacct.usage") / 1000000 ))
  fi
}

remove_cgroups() {
  for instance in 1 2; do
    local name="wenke-scale-$instance"
    if [ "$cgroup_version" = 2 ]; then
      rmdir "/sys/fs/cgroup/$name" 2>/dev/null || true
    else
      rmdir "/sys/fs/cgroup/cpu/$name" "/sys/fs/cgroup/cpuacct/$name" "/sys/fs/cgroup/cpuset/$name" 2>/dev/null || true
    fi
  done
}

pids=()
stop_instances() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
trap 'stop_instances; remove_cgroups' EXIT

# Starts instance $1 inside its cgroup (the shell joins it, then becomes
# wenke, so every thread wenke starts is inside) and waits until it is ready.
start_instance() {
  local instance=$1 port=${ports[$(($1 - 1))]}
  make_cgroup "$instance" "$((instance - 1))"
  # shellcheck disable=SC2086 # the store options are words on purpose
  sh -c 'for f in $1; do echo $$ > "$f"; done; shift; exec "$@"' _ "$(cgroup_procs "$instance")" \
    "$wenke" $store_args --rate-limit 1000000 serve --addr "127.0.0.1:$port" --ip-limit 0 \
    > "/tmp/wenke-scale-$instance.log" 2>&1 &
  pids+=("$!")
  for _ in $(seq 1 240); do
    if curl -fsS "http://127.0.0.1:$port/readyz" > /dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  echo "scaleout: instance $instance did not become ready; see /tmp/wenke-scale-$instance.log" >&2
  exit 1
}

# Runs the load against the first $1 instances; prints the bench's report
# and each instance's CPU use, and leaves the replies per second in $rate.
measure() {
  local count=$1 urls=() before=() report
  for instance in $(seq 1 "$count"); do
    start_instance "$instance"
    urls+=(--url "http://127.0.0.1:${ports[$((instance - 1))]}")
  done
  # Each instance warms its own caches (query vectors, results) first, as
  # a long-running instance would have.
  "$wenke" bench chat "${urls[@]}" --clients "$clients" --seconds "$warmup_seconds" --mix realistic "${questions[@]}" > /dev/null
  for instance in $(seq 1 "$count"); do before+=("$(cpu_ms "$instance")"); done
  report=$("$wenke" bench chat "${urls[@]}" --clients "$clients" --seconds "$seconds" --mix realistic "${questions[@]}")
  echo "== $count instance(s), ${quota_percent}% of a core each, ${seconds} s"
  echo "$report"
  for instance in $(seq 1 "$count"); do
    local used=$(( $(cpu_ms "$instance") - before[instance - 1] ))
    echo "instance $instance: ${used} ms CPU in ${seconds} s ($((used / seconds / 10))% of a core; its quota ${quota_percent}%)"
  done
  rate=$(echo "$report" | sed -n 's/^replies [0-9]* (\([0-9.]*\)\/s).*/\1/p')
  stop_instances
  remove_cgroups
}

measure 1
one=$rate
measure 2
two=$rate
echo "== replies/s: one instance $one, two instances $two, ratio $(awk -v a="$two" -v b="$one" 'BEGIN {printf "%.2f", a / b}')"
