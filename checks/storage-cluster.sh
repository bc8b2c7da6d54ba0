#!/usr/bin/env bash
# Storage beyond one machine: three bb-storage nodes, each blob and each
# action result on two of them, behind `bb farm --storage-node` (its
# scheduler's CAS and Action Cache sharded over the nodes):
#   1. Bazel builds the checks workspace, every action remote, while one
#      node is killed with -9 in the middle; the build succeeds and every
#      output is the same as a local build's;
#   2. after `clean --expunge`, with the node still down, every action is a
#      remote cache hit;
#   3. the node comes back (with what it had when it was killed); a clean
#      build reads everything, and the copies it lacked are repaired: the
#      farm counts them (bb_storage_copies_repaired_total), and the build
#      is again the same as the local one.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

require_tool bazel "apt-get install -y bazel-bootstrap"
require_tool python3 "apt-get install -y python3"
require_tool curl "apt-get install -y curl"
require_binary bb
require_binary bb-storage

work=$(mktemp -d /tmp/bb-storage-cluster.XXXXXX)
chmod 755 "$work"
port=${BB_CLUSTER_PORT:-8880}
node_ports=($((port + 11)) $((port + 12)) $((port + 13)))
node_pids=("" "" "")
farm_pid=
cleanup() {
  local status=$?
  [ -n "$farm_pid" ] && kill "$farm_pid" 2>/dev/null && wait "$farm_pid" 2>/dev/null
  stop_background "${node_pids[@]}"
  if [ "$status" != 0 ]; then
    show_logs 30 "$work"/farm.err "$work"/node*.log "$work"/bb-farm/worker-*/*.log
  fi
  for base in local cluster; do bazel_in "$work/$base" shutdown >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT

for p in "$port" $((port + 2)) $((port + 3)) "${node_ports[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    die "port $p is in use; set BB_CLUSTER_PORT to another base port"
  fi
done

# A node keeps its share on disk, and checks no completeness of its own:
# it holds only part of the CAS, the farm checks against the whole.
start_node() {
  local i=$1
  cat >"$work/node$i.toml" <<EOF
grpc_listen = ["127.0.0.1:${node_ports[$i]}"]
[log]
level = "warn"
[storage]
[storage.cas]
backend = "disk"
path = "$work/node$i/cas"
max_size = "2GiB"
sync_writes = false
[storage.action_cache]
completeness_check = false
[storage.action_cache.store]
backend = "disk"
path = "$work/node$i/ac"
max_size = "256MiB"
sync_writes = false
EOF
  "$BB_BIN_DIR/bb-storage" --config "$work/node$i.toml" 2>>"$work/node$i.log" &
  node_pids[$i]=$!
  wait_for_port 127.0.0.1 "${node_ports[$i]}" 30
}

# outputs BASE: every output file of the build in output base BASE with its
# SHA-256, by path (runfiles trees and manifests name paths of the machine).
outputs() {
  local bin
  bin=$(bazel_in "$1" info bazel-bin 2>/dev/null)
  (cd "$bin" && find . -type f ! -path '*.runfiles/*' ! -name '*runfiles_manifest' ! -name '*.params' \
    ! -name 'MANIFEST' -print0 | sort -z | xargs -0 sha256sum)
}

log "reference: the workspace built locally"
bazel_in "$work/local" build --spawn_strategy=local //... >"$work/local.log" 2>&1 || {
  cat "$work/local.log"
  die "the local build failed"
}
outputs "$work/local" >"$work/local.sums"
log "   $(wc -l <"$work/local.sums") output files"

for i in 0 1 2; do start_node "$i"; done
nodes=()
for p in "${node_ports[@]}"; do nodes+=(--storage-node "grpc://127.0.0.1:$p"); done
(cd "$work" && exec "$BB_BIN_DIR/bb" farm --port "$port" --http-port $((port + 2)) --worker-port $((port + 3)) \
  --slots 4 "${nodes[@]}" --storage-copies 2 >"$work/farm.out" 2>"$work/farm.err") &
farm_pid=$!
for _ in $(seq 300); do grep -q "Ctrl-C" "$work/farm.out" 2>/dev/null && break; sleep 0.1; done
grep -q "Ctrl-C" "$work/farm.out" || die "bb farm did not start"

status_url="http://127.0.0.1:$((port + 2))"
completed() {
  curl -sf "$status_url/api/status" |
    python3 -c 'import json, sys; print(sum(w["completed_actions"] for w in json.load(sys.stdin)["workers"]))'
}
repaired() {
  curl -sf "$status_url/metrics" | python3 -c '
import re, sys
counts = {"cas": 0, "action_cache": 0}
for line in sys.stdin:
    m = re.match(r"bb_storage_copies_repaired_total\{store=\"(\w+)\"\} (\d+)", line)
    if m:
        counts[m.group(1)] = int(m.group(2))
print(counts["cas"], counts["action_cache"])'
}

flags=(--remote_executor="grpc://127.0.0.1:$port" --spawn_strategy=remote --remote_default_exec_properties=OSFamily=linux
  --remote_timeout=600 --noremote_local_fallback --jobs=8)

log "cold build, every action remote; node 1 is killed with -9 once some actions are done"
bazel_in "$work/cluster" build "${flags[@]}" --noremote_accept_cached //... >"$work/cold.log" 2>&1 &
bazel_pid=$!
for _ in $(seq 600); do
  [ "$(completed || echo 0)" -ge 6 ] && break
  kill -0 "$bazel_pid" 2>/dev/null || break
  sleep 0.05
done
done_before=$(completed)
kill -9 "${node_pids[1]}"
wait "${node_pids[1]}" 2>/dev/null || true
node_pids[1]=
log "   node 1 killed after $done_before actions"
wait "$bazel_pid" || {
  cat "$work/cold.log"
  die "the build failed with a storage node killed"
}
cold=$(every_action_remote "$work/cold.log")
log "   cold: $cold"
remote=$(count_of remote "$cold")
[ "$(completed)" -gt "$done_before" ] || die "no action ran after the node was killed: kill it earlier"
outputs "$work/cluster" >"$work/cluster.sums"
diff "$work/local.sums" "$work/cluster.sums" >"$work/outputs.diff" || {
  cat "$work/outputs.diff"
  die "outputs built through the cluster differ from the local build's"
}
log "   all $(wc -l <"$work/cluster.sums") output files are the same as the local build's"

log "after clean --expunge, node 1 still down: every action from the cache"
warm=$(all_cache_hits "$work/cluster" "$work/warm.log" "$remote" "${flags[@]}")
log "   warm: $warm"

log "node 1 comes back; a clean build reads everything and repairs its copies"
read -r cas_before ac_before < <(repaired)
start_node 1
all_cache_hits "$work/cluster" "$work/again.log" "$remote" "${flags[@]}" >/dev/null
cas_repaired=0
ac_repaired=0
for _ in $(seq 100); do
  read -r cas_now ac_now < <(repaired)
  cas_repaired=$((cas_now - cas_before))
  ac_repaired=$((ac_now - ac_before))
  # Blobs written while the node was down are many; results it owns among
  # the few written then may be none, when it was killed late.
  [ "$cas_repaired" -gt 0 ] && break
  sleep 0.1
done
log "   repaired on node 1: $cas_repaired blobs, $ac_repaired action results"
[ "$cas_repaired" -gt 0 ] || die "no blob copy was repaired"
outputs "$work/cluster" >"$work/again.sums"
diff -q "$work/local.sums" "$work/again.sums" >/dev/null || die "outputs differ after the repair"
log "PASS: a node killed mid-build stopped nothing; its $cas_repaired blob and $ac_repaired result copies were repaired"
