#!/usr/bin/env bash
# The hostile-input suite against the release `bb farm`, as the README
# recommends deploying it: run as root, workers as user bb-worker, runners
# and their actions as bb-runner. Every case must get its status; after
# each group, blobs stored before must read back intact and the farm must
# still run actions. The sandbox group attacks the runner's namespaces and
# cgroup limits, and asks for the network (the farm lets actions ask). The
# farm runs in a PID namespace of its own, so no
# action can reach a process of this machine outside it. Needs root
# (users, peak-memory reset); otherwise reported as SKIPPED, never passed.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$CHECKS_ROOT"

skip_unless_root "the hostile-input suite needs root (it runs actions as user bb-runner)"
require_tool unshare "apt-get install -y util-linux"
require_tool useradd "apt-get install -y passwd"
require_tool pgrep "apt-get install -y procps"
build_release
require_binary bb
ensure_farm_users

work=$(mktemp -d /tmp/bb-hostile.XXXXXX)
chmod 755 "$work"
trap 'stop_farm_in_namespace; rm -rf "$work"' EXIT
farm_args=(--port 28980 --http-port 28982 --worker-port 28983 --workers 1 --slots 2
  --action-memory 1GiB --action-processes 4096 --network-property)
start_farm_in_namespace "$work/farm.out" --state-dir "$work/farm" "${farm_args[@]}"
worker=$(pgrep -n -u bb-worker) || die "no process of bb-worker: the farm does not separate its users"
"$BB_BIN_DIR/examples/hostile" --endpoint grpc://127.0.0.1:28980 --state-dir "$work/farm" --worker-pid "$worker" ||
  { tail -n 30 "$work/farm.out" >&2; die "hostile-input suite"; }
grep -q "each action runs with namespaces, a cgroup each" "$work/farm/worker-0/runner.log" ||
  { cat "$work/farm/worker-0/runner.log" >&2; die "the runner did not give actions namespaces and cgroups"; }
