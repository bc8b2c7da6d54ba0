#!/usr/bin/env bash
# Storage beyond one node, measured side by side in one run with the
# storage_bench example (ByteStream upload and download of one blob, and
# FindMissingBlobs of 10,000 digests of which half are stored), through a
# release bb-storage configured as:
#   one node        a disk store;
#   sharded x3      a frontend sharding over three such nodes (one copy);
#   mirrored x3/2   the same with two copies of each blob;
#   bucket          SeaweedFS's S3 API alone (object_storage);
#   bucket+disk     SeaweedFS behind a local disk (read_caching), as
#                   `bb farm --bucket` runs it.
# Every store is on the same disk without fsync, all processes on loopback.
# Figures are ratios: throughput to the in-process SHA-256 of the same data
# (the floor of any upload: the server hashes what it stores), and each
# configuration to one node.
# Usage: checks/bench/storage-tiers.sh [SIZE]   (default 512MiB)
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
cd "$CHECKS_ROOT"
build_release 2>/dev/null
require_binary bb-storage

work=$(mktemp -d /tmp/bb-bench-tiers.XXXXXX)
pids=()
SEAWEEDFS_PID=
trap 'stop_background "${pids[@]}"; stop_seaweedfs; rm -rf "$work"' EXIT
base=${BB_BENCH_PORT:-18900}
frontend=$((base + 20))
size=${1:-512MiB}

# serve NAME PORT CAS-STORE-TOML: a bb-storage whose CAS is that store.
serve() {
  printf 'grpc_listen = ["127.0.0.1:%s"]\n[log]\nlevel = "warn"\n[storage.cas]\n%s\n[storage.action_cache]\ncompleteness_check = false\n[storage.action_cache.store]\nbackend = "memory"\nmax_size = "64MiB"\n' \
    "$2" "$3" >"$work/$1.toml"
  "$BB_BIN_DIR/bb-storage" --config "$work/$1.toml" 2>>"$work/$1.log" &
  pids+=($!)
  wait_for_port 127.0.0.1 "$2" 30
}
disk() { printf 'backend = "disk"\npath = "%s"\nmax_size = "8GiB"\nsync_writes = false' "$work/$1"; }
inline_disk() { printf '{ backend = "disk", path = "%s", max_size = "8GiB", sync_writes = false }' "$work/$1"; }
bucket() {
  printf 'backend = "object_storage"\nbucket = "bb-farm"\nendpoint = "%s"\nprefix = "%s"\ncredentials_file = "%s"' \
    "$SEAWEEDFS_S3" "$1" "$work/weed/credentials"
}
sharding() {
  local copies=$1 shards="" i
  for i in 1 2 3; do
    shards+="{ name = \"node$i\", store = { backend = \"grpc\", endpoint = \"grpc://127.0.0.1:$((base + 10 + i))\" } },"
  done
  printf 'backend = "sharding"\ncopies = %s\nshards = [%s]' "$copies" "$shards"
}

results=()
measure() {
  local name=$1 out="$work/${1//[^a-z0-9]/_}.out"
  log "$name"
  "$BB_BIN_DIR/examples/storage_bench" --endpoint "grpc://127.0.0.1:$frontend" --size "$size" | tee "$out" >&2
  results+=("$name $(grep '^result:' "$out")")
  stop_background "${pids[-1]}"
  unset 'pids[-1]'
}

sync
serve one "$frontend" "$(disk one)"
measure "one node"
for i in 1 2 3; do serve "node$i" $((base + 10 + i)) "$(disk "node$i")"; done
serve sharded "$frontend" "$(sharding 1)"
measure "sharded x3"
serve mirrored "$frontend" "$(sharding 2)"
measure "mirrored x3/2"
start_seaweedfs "$work/weed" $((base + 40))
serve bucket "$frontend" "$(bucket alone)"
measure "bucket"
serve tiered "$frontend" "$(printf 'backend = "read_caching"\nfast = %s\nslow = { %s }' "$(inline_disk fast)" \
  "$(bucket tiered | paste -sd, - | sed 's/,/, /g')")"
measure "bucket+disk"

echo
echo "$size blob, medians; throughput as a share of in-process SHA-256, and each to one node:"
printf '%s\n' "${results[@]}" | awk '
  {
    name = $1; for (i = 2; i <= NF && $i != "result:"; i++) name = name " " $i
    for (j = i + 1; j <= NF; j++) { split($j, kv, "="); v[kv[1]] = kv[2] }
    if (NR == 1) { up1 = v["upload_mbps"]; down1 = v["download_mbps"]; fm1 = v["find_missing_ms"] }
    printf "%-14s upload %5.0f MB/s = %4.2f x sha256 (%4.2f x one node)  download %5.0f MB/s (%4.2f x one node)  FindMissing %6.2f ms (%5.2f x one node)\n",
      name, v["upload_mbps"], v["upload_mbps"] / v["sha256_mbps"], v["upload_mbps"] / up1,
      v["download_mbps"], v["download_mbps"] / down1, v["find_missing_ms"], v["find_missing_ms"] / fm1
  }'
