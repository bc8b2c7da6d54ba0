#!/usr/bin/env bash
# Bazel 4.2.3 through `bb farm` (remote execution):
#   1. cold, with --noremote_accept_cached: every action runs remotely, and
#      the build and its tests pass;
#   2. a target that fails on purpose fails with its exit code and stderr,
#      and with a link to its action page, which shows that stderr;
#   3. after `bazel clean --expunge`, every action is a remote cache hit;
#   4. --remote_download_minimal builds without downloading the outputs.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"

require_tool bazel "apt-get install -y bazel-bootstrap"
require_tool curl "apt-get install -y curl"
require_binary bb

work=$(mktemp -d /tmp/bb-remote-exec.XXXXXX)
# As root, bb farm runs workers as bb-worker and bb-runner: they must reach it.
chmod 755 "$work"
port=${BB_FARM_PORT:-8980}
farm_pid=
cleanup() {
  local status=$?
  [ -n "$farm_pid" ] && kill "$farm_pid" 2>/dev/null && wait "$farm_pid" 2>/dev/null
  if [ "$status" != 0 ]; then
    for f in "$work"/farm.err "$work"/bb-farm/worker-*/*.log; do
      [ -f "$f" ] && { echo "--- $f"; tail -n 30 "$f"; }
    done
  fi
  bazel_in "$work/bazel" shutdown >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  die "port $port is in use (another farm?); set BB_FARM_PORT to another port"
fi
(cd "$work" && exec "$BB_BIN_DIR/bb" farm --port "$port" --http-port $((port + 2)) --worker-port $((port + 3)) \
  --slots 4 >"$work/farm.out" 2>"$work/farm.err") &
farm_pid=$!
wait_for_port 127.0.0.1 "$port" 60
sleep 1
cat "$work/farm.out" >&2

flags=(--remote_executor="grpc://127.0.0.1:$port" --spawn_strategy=remote --remote_default_exec_properties=OSFamily=linux
  --remote_timeout=600 --remote_retries=0 --noremote_local_fallback --jobs=8)

log "cold build and test, every action executed remotely"
bazel_in "$work/bazel" test "${flags[@]}" --noremote_accept_cached //... >"$work/cold.log" 2>&1 || {
  cat "$work/cold.log" "$work/farm.err"
  die "cold build failed"
}
cold=$(every_action_remote "$work/cold.log")
log "cold: $cold"
remote=$(count_of remote "$cold")
grep -q "2 tests pass" "$work/cold.log" || die "the tests did not pass remotely"

log "a target that fails on purpose"
if bazel_in "$work/bazel" build "${flags[@]}" //fail:fails >"$work/fail.log" 2>&1; then
  die "//fail:fails succeeded"
fi
grep -q "this target fails on purpose" "$work/fail.log" || { cat "$work/fail.log"; die "the failure's stderr is not shown"; }
grep -qE "Exit 3|exit code 3|exit status 3" "$work/fail.log" || { cat "$work/fail.log"; die "the exit code 3 is not shown"; }
# Bazel prints the farm's message with the failure: a link to the action's page.
page=$(grep -oE "Details of this action: http://[^ ]+" "$work/fail.log" | head -n 1 | sed 's/^Details of this action: //')
[ -n "$page" ] || { cat "$work/fail.log"; die "Bazel did not show the link to the failed action's page"; }
# The page is read whole before it is searched: `curl | grep -q` fails under
# pipefail whenever grep stops reading before curl has written everything.
page_html=$(curl -sf "$page") || die "the failed action's page $page did not load"
grep -q "this target fails on purpose" <<<"$page_html" || die "the failed action's page $page does not show its stderr"
log "   the failure links to its action page, which shows its stderr"

log "after clean --expunge: every action from the remote cache"
bazel_in "$work/bazel" clean --expunge >/dev/null 2>&1
bazel_in "$work/bazel" test "${flags[@]}" //... >"$work/warm.log" 2>&1 || { cat "$work/warm.log"; die "warm build failed"; }
warm=$(process_summary "$work/warm.log")
log "warm: $warm"
hits=$(count_of "remote cache hit" "$warm")
[ "$hits" -eq "$remote" ] || die "expected $remote remote cache hits, got: $warm"

log "--remote_download_minimal"
bazel_in "$work/bazel" clean --expunge >/dev/null 2>&1
bazel_in "$work/bazel" build "${flags[@]}" --remote_download_minimal //... >"$work/minimal.log" 2>&1 || {
  cat "$work/minimal.log"
  die "build with --remote_download_minimal failed"
}
big=$(find "$work/bazel" -path '*/bin/gen/big.txt' 2>/dev/null | head -n 1)
[ -z "$big" ] || [ ! -s "$big" ] || die "--remote_download_minimal downloaded $big"
log "PASS: remote execution, failures, remote cache hits and build without the bytes through bb farm"
