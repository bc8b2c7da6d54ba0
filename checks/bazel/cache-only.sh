#!/usr/bin/env bash
# Bazel 4.2.3 against a standalone bb-storage as its remote cache
# (--remote_cache, local execution):
#   1. a cold build and test of //... runs every action locally and uploads;
#   2. bb-storage is restarted (its disk store must keep everything);
#   3. after `bazel clean --expunge`, the same build is served entirely from
#      the remote cache: every non-internal process is a remote cache hit.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"

require_tool bazel "apt-get install -y bazel-bootstrap"
require_binary bb-storage

work=$(mktemp -d /tmp/bb-cache-only.XXXXXX)
port=${BB_STORAGE_PORT:-8981}
storage_pid=
cleanup() {
  [ -n "$storage_pid" ] && kill "$storage_pid" 2>/dev/null && wait "$storage_pid" 2>/dev/null
  bazel_in "$work/bazel" shutdown >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/storage.toml" <<TOML
grpc_listen = ["127.0.0.1:$port"]
[storage.cas]
backend = "disk"
path = "$work/data/cas"
max_size = "2GiB"
[storage.action_cache]
[storage.action_cache.store]
backend = "disk"
path = "$work/data/ac"
max_size = "64MiB"
TOML

start_storage() {
  "$BB_BIN_DIR/bb-storage" --config "$work/storage.toml" >>"$work/storage.log" 2>&1 &
  storage_pid=$!
  wait_for_port 127.0.0.1 "$port"
}

stop_storage() {
  kill -TERM "$storage_pid"
  wait "$storage_pid" || die "bb-storage did not exit cleanly on SIGTERM (see $work/storage.log)"
  storage_pid=
}

flags=(--remote_cache="grpc://127.0.0.1:$port" --spawn_strategy=local --remote_timeout=120
  --remote_retries=0 --jobs=8)

start_storage
log "cold build and test, uploading to bb-storage"
bazel_in "$work/bazel" test "${flags[@]}" //... >"$work/cold.log" 2>&1 || {
  cat "$work/cold.log"
  die "cold build failed"
}
cold=$(process_summary "$work/cold.log")
log "cold: $cold"
ran=$(( $(count_of local "$cold") + $(count_of linux-sandbox "$cold") + $(count_of processwrapper-sandbox "$cold") ))
[ "$ran" -gt 0 ] || die "the cold build ran no actions: $cold"

log "restarting bb-storage"
stop_storage
start_storage

bazel_in "$work/bazel" clean --expunge >/dev/null 2>&1
log "warm build and test after clean --expunge"
bazel_in "$work/bazel" test "${flags[@]}" //... >"$work/warm.log" 2>&1 || {
  cat "$work/warm.log"
  die "warm build failed"
}
warm=$(process_summary "$work/warm.log")
log "warm: $warm"
hits=$(count_of "remote cache hit" "$warm")
internal=$(count_of internal "$warm")
total=$(printf '%s\n' "$warm" | grep -oE '^INFO: [0-9]+' | grep -oE '[0-9]+')
[ "$hits" -eq "$ran" ] || die "expected $ran remote cache hits, got: $warm"
[ $((hits + internal)) -eq "$total" ] || die "some actions were not cache hits: $warm"
grep -q "2 tests pass" "$work/warm.log" || die "tests did not pass on the warm build"
log "PASS: all $hits actions of the second build were remote cache hits, across a bb-storage restart"
