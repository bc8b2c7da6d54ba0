#!/usr/bin/env bash
# `bb farm` as root on a machine without users bb-worker and bb-runner: it
# must create them (the worker in the runner's group) and say so, never run
# actions as root. Run against a private copy of /etc in a mount namespace
# of its own, so this machine's users are untouched. Needs root; otherwise
# reported as SKIPPED, never passed.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
cd "$CHECKS_ROOT"

skip_unless_root "the farm-users check needs root"
require_tool unshare "apt-get install -y util-linux"
require_tool useradd "apt-get install -y passwd"
require_binary bb

work=$(mktemp -d /tmp/bb-users.XXXXXX)
chmod 755 "$work"
trap 'rm -rf "$work"' EXIT
cp -a /etc "$work/etc"
for file in passwd group shadow gshadow; do
  [ -f "$work/etc/$file" ] && sed -i '/^bb-worker:/d; /^bb-runner:/d' "$work/etc/$file"
done
unshare --mount --pid --fork --mount-proc sh -c '
  mount --bind "$1/etc" /etc
  "$2/bb" farm --state-dir "$1/farm" --port 48980 --http-port 48982 --worker-port 48983 >"$1/farm.out" 2>"$1/farm.err" &
  farm=$!
  for _ in $(seq 300); do grep -q Ctrl-C "$1/farm.out" 2>/dev/null && break; sleep 0.1; done
  "$2/bb" exec --endpoint grpc://127.0.0.1:48980 -- id -un >"$1/whoami" 2>"$1/exec.err" || true
  kill "$farm"; wait "$farm"
' sh "$work" "$BB_BIN_DIR"
grep -q "created user bb-runner" "$work/farm.err" || { cat "$work/farm.err" >&2; die "bb farm did not say it created bb-runner"; }
grep -q "created user bb-worker" "$work/farm.err" || die "bb farm did not say it created bb-worker"
grep -q '^bb-runner:.*:bb-worker' "$work/etc/group" || die "bb-worker is not in group bb-runner"
[ "$(cat "$work/whoami")" = bb-runner ] || { cat "$work/exec.err" >&2; die "actions ran as $(cat "$work/whoami"), not bb-runner"; }
log "bb farm created bb-runner and bb-worker (in group bb-runner) and ran actions as bb-runner"
