#!/usr/bin/env bash
# End-to-end latency and throughput of no-op actions through `bb farm`
# (release build, default settings, this machine's cores as slots).
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
cd "$CHECKS_ROOT"
build_release 2>/dev/null
require_binary bb

work=$(mktemp -d /tmp/bb-bench.XXXXXX)
chmod 755 "$work"
pid=
trap '[ -n "$pid" ] && kill $pid 2>/dev/null && wait $pid 2>/dev/null; rm -rf "$work"' EXIT
"$BB_BIN_DIR/bb" farm --state-dir "$work/farm" --port 18980 --http-port 18982 --worker-port 18983 >"$work/farm.out" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q "Ctrl-C" "$work/farm.out" 2>/dev/null && break; sleep 0.1; done
head -n 1 "$work/farm.out"
"$BB_BIN_DIR/examples/noop_bench" --endpoint grpc://127.0.0.1:18980 "$@"
