#!/usr/bin/env bash
# Benchmarks a release bb-scheduler (embedded memory storage) with simulated
# no-op workers and concurrent clients over loopback gRPC, then the memory
# an in-process build queue takes for 100,000 queued actions.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
cd "$CHECKS_ROOT"
build_release 2>/dev/null
require_binary bb-scheduler

work=$(mktemp -d /tmp/bb-bench.XXXXXX)
pid=
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; rm -rf "$work"' EXIT
# The embedded default, but with memory stores and quiet logs.
"$BB_BIN_DIR/bb-scheduler" --print-default-config \
  | sed -e 's/\[::\]:8980/127.0.0.1:18980/; s/\[::\]:8983/127.0.0.1:18983/; s/^http_listen.*//' \
        -e 's/level = "info"/level = "warn"/' \
        -e 's/^backend = "disk"/backend = "memory"/; /^path = /d; /^sync_writes/d' >"$work/scheduler.toml"
"$BB_BIN_DIR/bb-scheduler" --config "$work/scheduler.toml" &
pid=$!
wait_for_port 127.0.0.1 18980
"$BB_BIN_DIR/examples/scheduler_bench" throughput --client 127.0.0.1:18980 --worker 127.0.0.1:18983 "$@"
kill $pid
wait $pid || true
pid=
"$BB_BIN_DIR/examples/scheduler_bench" memory --actions 100000
