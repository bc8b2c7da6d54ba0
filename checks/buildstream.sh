#!/usr/bin/env bash
# BuildStream 2.8.1 through the farm. The project in checks/buildstream
# (three `kind: manual` elements on a static busybox sysroot whose applets
# are absolute symlinks, one with several outputs in subdirectories) is
# built locally, then with a fresh local cache against each farm, twice:
#   1. `bb farm --chroot`;
#   2. the separate programs as a NixOS operator runs them: bb-scheduler
#      (embedded storage), bb-runner as bb-runner with
#      chroot_into_input_root, bb-worker as bb-worker.
# Every manual element must run on the farm the first time (the
# scheduler's metrics count them), `bst artifact checkout` must give the
# same files, modes and symlinks as the local build, and the second build
# must come from the farm's Action Cache alone. Needs root.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$CHECKS_ROOT"

skip_unless_root "the BuildStream check runs the farm's users as root does"
BST=${BST:-$BB_TOOLS/buildstream-2.8.1/bin/bst}
[ -x "$BST" ] || die "BuildStream 2.8.1 is missing; install it with: checks/install.sh"
require_tool bwrap "apt-get install -y bubblewrap"
require_tool setpriv "apt-get install -y util-linux"
require_tool python3 "apt-get install -y python3"
# A static busybox: ldd finds no libraries in it (and fails).
{ [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; } ||
  die "/bin/busybox is not a static busybox; install it with: apt-get install -y busybox-static"
for binary in bb bb-scheduler bb-worker bb-runner; do require_binary "$binary"; done
ensure_farm_users

manual_elements=3
work=$(mktemp -d /tmp/bb-buildstream.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  local status=$?
  stop_background "${pids[@]}"
  [ "$status" = 0 ] || show_logs 30 "$work"/*.log "$work"/*/*.log
  rm -rf "$work"
}
trap cleanup EXIT

# --- The project, with its sysroot: bin/busybox, applets linked absolutely.
cp -r checks/buildstream "$work/project"
sysroot=$work/project/sysroot
install -d "$sysroot/bin" "$sysroot/usr/bin" "$sysroot/tmp"
cp /bin/busybox "$sysroot/bin/busybox"
for applet in sh cat echo ls mkdir cp ln chmod printf sort; do ln -s /bin/busybox "$sysroot/bin/$applet"; done
export XDG_CACHE_HOME=$work/xdg

# bst_config NAME [PORT]: a user configuration with a cache of its own, and
# remote execution on localhost:PORT when given.
bst_config() {
  local file=$work/$1.conf
  # buildbox-casd keeps 5% of the disk free by default and, on a fuller
  # disk, cleans its cache in a loop instead of building.
  printf 'cachedir: %s\nlogdir: %s\ncache:\n  reserved-disk-space: 64M\n' "$work/cache-$1" "$work/logs-$1" >"$file"
  if [ -n "${2:-}" ]; then
    cat >>"$file" <<EOF
remote-execution:
  execution-service:
    url: http://localhost:$2
  storage-service:
    url: http://localhost:$2
  action-cache-service:
    url: http://localhost:$2
EOF
  fi
  echo "$file"
}

# build_and_check_out NAME [PORT]: builds all.bst with a fresh local cache
# and checks it out into $work/out-NAME.
build_and_check_out() {
  local config
  config=$(bst_config "$@")
  (cd "$work/project" && timeout 600 "$BST" --no-interactive -c "$config" build all.bst) >"$work/bst-$1.log" 2>&1 ||
    die "bst build ($1) failed: $(tail -n 20 "$work/bst-$1.log")"
  (cd "$work/project" && timeout 600 "$BST" --no-interactive -c "$config" artifact checkout all.bst \
    --directory "$work/out-$1") >>"$work/bst-$1.log" 2>&1 || die "bst artifact checkout ($1) failed"
}

# Every path with its type, mode and symlink target, and every file's hash.
listing() {
  (cd "$1" && find . -mindepth 1 -printf '%P %y %m %l\n' | sort && find . -type f -print0 | sort -z | xargs -0 sha256sum)
}

same_as_local() {
  diff <(listing "$work/out-local") <(listing "$work/out-$1") >"$work/diff-$1.txt" ||
    die "$1: the checkout differs from the local build's: $(cat "$work/diff-$1.txt")"
}

# metric HTTP_PORT NAME{LABELS}: a counter of the farm's /metrics.
metric() {
  python3 - "$1" "$2" <<'EOF'
import sys, urllib.request
port, name = sys.argv[1], sys.argv[2]
text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
print(next((int(float(l.split()[-1])) for l in text.splitlines() if l.split(" ")[0] == name), 0))
EOF
}

# check_farm NAME PORT HTTP_PORT: two builds against the farm on PORT.
check_farm() {
  local name=$1 port=$2 http=$3
  local ran='bb_scheduler_completed_operations_total{outcome="success"}'
  local hits='bb_storage_action_cache_requests_total{outcome="hit"}'
  log "$name: building with a fresh local cache"
  build_and_check_out "$name-1" "$port"
  local executed
  executed=$(metric "$http" "$ran")
  [ "$executed" = "$manual_elements" ] ||
    die "$name: the farm ran $executed actions, not the $manual_elements manual elements"
  grep -q "Waiting for the remote build to complete" "$work/bst-$name-1.log" ||
    die "$name: BuildStream did not build remotely"
  same_as_local "$name-1"
  log "$name: again with a fresh local cache: from the farm's Action Cache"
  local hits_before
  hits_before=$(metric "$http" "$hits")
  build_and_check_out "$name-2" "$port"
  [ "$(metric "$http" "$ran")" = "$manual_elements" ] || die "$name: the second build ran actions again"
  [ $(($(metric "$http" "$hits") - hits_before)) -ge "$manual_elements" ] ||
    die "$name: the second build was not served from the Action Cache"
  same_as_local "$name-2"
  log "$name: $manual_elements elements built remotely, then served from the Action Cache; checkouts match"
}

log "building locally (bubblewrap)"
build_and_check_out local
[ -L "$work/out-local/usr/share/data/absolute-link" ] || die "the local checkout lacks its absolute symlink"

# --- 1. bb farm --chroot.
"$BB_BIN_DIR/bb" farm --chroot --state-dir "$work/farm" --port 29980 --http-port 29982 --worker-port 29983 \
  >"$work/farm.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q "Ctrl-C" "$work/farm.log" 2>/dev/null && break; sleep 0.1; done
grep -q "Ctrl-C" "$work/farm.log" || die "bb farm did not start"
check_farm "bb farm --chroot" 29980 29982

# --- 2. The separate programs.
dir=$work/programs
install -d -m 0755 "$dir"
install -d -o bb-worker -g bb-worker -m 0711 "$dir/build"
install -d -o bb-worker -g bb-worker -m 0700 "$dir/cache"
install -d -o bb-runner -g bb-runner -m 0750 "$dir/run"
# Each program's embedded default configuration, with this farm's
# addresses and directories.
sed -e 's|^client_listen = .*|client_listen = ["127.0.0.1:29990"]|' \
  -e 's|^worker_listen = .*|worker_listen = ["127.0.0.1:29993"]|' \
  -e 's|^http_listen = .*|http_listen = "127.0.0.1:29992"|' \
  -e "s|bb-scheduler-data|$dir/scheduler|" crates/bb-scheduler/default-config.toml >"$dir/scheduler.toml"
cat >"$dir/runner.toml" <<EOF
listen = "unix:$dir/run/runner.sock"
build_directory = "$dir/build"
chroot_into_input_root = true
EOF
sed -e 's|^scheduler = .*|scheduler = "grpc://127.0.0.1:29993"|' \
  -e 's|^storage = .*|storage = "grpc://127.0.0.1:29990"|' \
  -e "s|^runner = .*|runner = \"unix:$dir/run/runner.sock\"|" \
  -e "s|bb-worker-data|$dir|" -e 's|^concurrency = .*|concurrency = 2|' \
  -e 's|^platform = .*|platform = [{ name = "OSFamily", value = "linux" }, { name = "ISA", value = "'"$(uname -m | tr _ -)"'" }]|' \
  crates/bb-worker/default-config.toml >"$dir/worker.toml"
"$BB_BIN_DIR/bb-scheduler" --config "$dir/scheduler.toml" >"$dir/scheduler.log" 2>&1 &
pids+=($!)
setpriv --reuid bb-runner --regid bb-runner --init-groups --bounding-set -all --inh-caps -all -- \
  "$BB_BIN_DIR/bb-runner" --config "$dir/runner.toml" >"$dir/runner.log" 2>&1 &
pids+=($!)
setpriv --reuid bb-worker --regid bb-worker --init-groups --bounding-set -all --inh-caps -all -- \
  "$BB_BIN_DIR/bb-worker" --config "$dir/worker.toml" >"$dir/worker.log" 2>&1 &
pids+=($!)
wait_for_port 127.0.0.1 29990
for _ in $(seq 100); do
  [ "$(metric 29992 bb_scheduler_workers 2>/dev/null || echo 0)" = 2 ] && break
  sleep 0.1
done
[ "$(metric 29992 bb_scheduler_workers)" = 2 ] || die "the worker's two slots did not register"
check_farm "bb-scheduler, bb-worker, bb-runner" 29990 29992
log "BuildStream builds through both farms"
