#!/usr/bin/env bash
# Object storage as the farm's storage: `bb farm --bucket` keeps the CAS and
# the Action Cache in a bucket of SeaweedFS (a real S3-compatible server,
# with access keys required), behind the farm's disk as a read cache.
#   1. Bazel builds the checks workspace, every action remote;
#   2. the farm stops and its whole state directory, the local tier
#      included, is wiped; the farm starts again on the same bucket;
#   3. after `clean --expunge` every action is a remote cache hit, the
#      outputs are the same as the first build's, and the local tier holds
#      what the rebuild read.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

require_tool bazel "apt-get install -y bazel-bootstrap"
require_tool curl "apt-get install -y curl"
require_binary bb

work=$(mktemp -d /tmp/bb-object-storage.XXXXXX)
chmod 755 "$work"
port=${BB_OBJECT_PORT:-8780}
SEAWEEDFS_PID=
farm_pid=
stop_farm() {
  [ -n "$farm_pid" ] && kill "$farm_pid" 2>/dev/null && wait "$farm_pid" 2>/dev/null
  farm_pid=
}
cleanup() {
  local status=$?
  stop_farm || true
  stop_seaweedfs
  [ "$status" != 0 ] && show_logs 30 "$work"/farm.err "$work"/weed/weed.log "$work"/bb-farm/worker-*/*.log
  bazel_in "$work/farm" shutdown >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

for p in "$port" $((port + 2)) $((port + 3)); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    die "port $p is in use; set BB_OBJECT_PORT to another base port"
  fi
done

start_seaweedfs "$work/weed" $((port + 40))
log "SeaweedFS 4.48 on loopback, S3 API at $SEAWEEDFS_S3, access keys required"
anonymous=$(curl -s -o /dev/null -w '%{http_code}' "$SEAWEEDFS_S3/bb-farm?list-type=2")
[ "$anonymous" = 403 ] || die "the bucket answered an unsigned listing with HTTP $anonymous, not 403"

start_farm() {
  (cd "$work" && exec "$BB_BIN_DIR/bb" farm --port "$port" --http-port $((port + 2)) --worker-port $((port + 3)) \
    --slots 4 --bucket bb-farm --bucket-endpoint "$SEAWEEDFS_S3" --bucket-credentials "$work/weed/credentials" \
    >"$work/farm.out" 2>"$work/farm.err") &
  farm_pid=$!
  for _ in $(seq 300); do grep -q "Ctrl-C" "$work/farm.out" 2>/dev/null && break; sleep 0.1; done
  grep -q "Ctrl-C" "$work/farm.out" || die "bb farm did not start"
}

# outputs: every output file of the build with its SHA-256, by path.
outputs() {
  local bin
  bin=$(bazel_in "$work/farm" info bazel-bin 2>/dev/null)
  (cd "$bin" && find . -type f ! -path '*.runfiles/*' ! -name '*runfiles_manifest' ! -name '*.params' \
    ! -name 'MANIFEST' -print0 | sort -z | xargs -0 sha256sum)
}

flags=(--remote_executor="grpc://127.0.0.1:$port" --spawn_strategy=remote --remote_default_exec_properties=OSFamily=linux
  --remote_timeout=600 --noremote_local_fallback --jobs=8)

log "cold build through a farm whose storage is the bucket"
start_farm
bazel_in "$work/farm" build "${flags[@]}" --noremote_accept_cached //... >"$work/cold.log" 2>&1 || {
  cat "$work/cold.log"
  die "the build failed"
}
cold=$(every_action_remote "$work/cold.log")
log "   cold: $cold"
remote=$(count_of remote "$cold")
outputs >"$work/cold.sums"

log "the farm stops; its state directory, the local tier with it, is wiped; it starts again"
stop_farm
local_blobs=$(find "$work/bb-farm/storage" -type f | wc -l)
[ "$local_blobs" -gt 0 ] || die "the local tier held nothing after the build"
rm -rf "$work/bb-farm"
start_farm

log "after clean --expunge every action is a cache hit, read from the bucket"
warm=$(all_cache_hits "$work/farm" "$work/warm.log" "$remote" "${flags[@]}")
log "   warm: $warm"
outputs >"$work/warm.sums"
diff "$work/cold.sums" "$work/warm.sums" >"$work/outputs.diff" || {
  cat "$work/outputs.diff"
  die "outputs read back from the bucket differ from the build's"
}
refilled=$(find "$work/bb-farm/storage" -type f | wc -l)
[ "$refilled" -gt 0 ] || die "the local tier was not refilled by the rebuild's reads"
log "   all $(wc -l <"$work/warm.sums") output files are the same; the local tier held $local_blobs files, refilled with $refilled"
log "PASS: the farm's cache survived the loss of its whole state directory, from the bucket"
