#!/usr/bin/env bash
# The fault suite, against the release `bb farm` as root (workers as
# bb-worker, runners as bb-runner): during a batch of 100 actions, kill -9
# a worker, then a runner, then the whole farm (restarted on the same state
# directory); during 40 large uploads, kill -9 a standalone bb-storage
# (restarted). Every client must end with the right result, seeing at most
# retryable statuses on the way, and blobs stored before the faults must
# read back intact. The farm runs in a PID namespace of its own.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$CHECKS_ROOT"

skip_unless_root "the fault suite needs root (it runs the farm with users bb-worker and bb-runner)"
require_tool unshare "apt-get install -y util-linux"
require_tool pgrep "apt-get install -y procps"
build_release
require_binary bb
ensure_farm_users

work=$(mktemp -d /tmp/bb-faults.XXXXXX)
chmod 755 "$work"
storage_pid=
cleanup() {
  stop_farm_in_namespace
  [ -n "$storage_pid" ] && kill "$storage_pid" 2>/dev/null && wait "$storage_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
endpoint=grpc://127.0.0.1:38980
faults() { "$BB_BIN_DIR/examples/faults" --endpoint "${FAULTS_ENDPOINT:-$endpoint}" "$@"; }
starts=0
start_farm() {
  starts=$((starts + 1))
  start_farm_in_namespace "$work/farm-$starts.out" --state-dir "$work/farm" --port 38980 --http-port 38982 \
    --worker-port 38983 --workers 1 --slots 2
}
# kill_during NAME COMMAND...: runs a batch, kills with COMMAND a moment in.
kill_during() {
  local name=$1
  shift
  faults batch --actions 100 >"$work/batch.out" 2>&1 &
  local batch=$!
  sleep 2
  "$@"
  wait "$batch" || { cat "$work/batch.out" >&2; die "$name: the batch did not end right"; }
  log "$name: $(head -n 1 "$work/batch.out")"
}

start_farm
faults sentinels put >/dev/null
kill_during "kill -9 of a worker" sh -c 'kill -9 $(pgrep -n -u bb-worker)'
# The runner is the process named bb; its sandboxes are named bb-sandbox,
kill_during "kill -9 of a runner" sh -c 'kill -9 $(pgrep -n -u bb-runner -x bb)'
# Its sandboxes' inits are cloned and reaped by its zygote, which it forks
# again.
kill_during "kill -9 of a runner's zygote" sh -c 'kill -9 $(pgrep -n -u bb-runner -x bb-zygote)'
grep -q "zygote is gone" "$work/farm/worker-0/runner.log" || die "the runner did not fork a new zygote"
restart_farm() {
  kill_farm_in_namespace
  sleep 1
  start_farm
}
kill_during "kill -9 of the whole farm, restarted" restart_farm
faults sentinels check >/dev/null || die "blobs stored before the faults did not survive"
log "blobs stored before the faults read back intact"
grep -h "exited" "$work"/farm-*.out | sed 's/^/    /' >&2 || true

# bb-storage on its own, killed mid-upload and restarted on the same disk.
cat >"$work/storage.toml" <<TOML
grpc_listen = ["127.0.0.1:38981"]
[storage]
[storage.cas]
backend = "disk"
path = "$work/storage/cas"
max_size = "2GiB"
[storage.action_cache]
[storage.action_cache.store]
backend = "disk"
path = "$work/storage/ac"
max_size = "64MiB"
TOML
start_storage() {
  "$BB_BIN_DIR/bb" storage --config "$work/storage.toml" >>"$work/storage.log" 2>&1 &
  storage_pid=$!
  wait_for_port 127.0.0.1 38981
}
start_storage
export FAULTS_ENDPOINT=grpc://127.0.0.1:38981
faults sentinels put >/dev/null
faults uploads --blobs 40 >"$work/uploads.out" 2>&1 &
uploads=$!
sleep 1
kill -9 "$storage_pid"
wait "$storage_pid" 2>/dev/null || true
start_storage
wait "$uploads" || { cat "$work/uploads.out" >&2; die "uploads through a bb-storage restart did not end right"; }
log "kill -9 of bb-storage mid-upload, restarted: $(head -n 1 "$work/uploads.out")"
faults sentinels check >/dev/null || die "bb-storage lost blobs stored before it was killed"
log "fault suite: every client ended right; nothing stored was lost"
