#!/usr/bin/env bash
# End-to-end latency and throughput of no-op actions through `bb farm`
# (release build, default settings, this machine's cores as slots), and
# the CPU each of the farm's processes spent per action. The farm's state is
# on tmpfs, as in compare.sh: where /tmp's ext4 block groups are crowded,
# each file the farm creates can cost ~0.8 ms of kernel time there (measured
# here against 65 µs in /var/tmp of the same filesystem), which would swamp
# what the farm itself does.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/farm-cpu.sh"
cd "$CHECKS_ROOT"
build_release 2>/dev/null
require_binary bb

work=$(mktemp -d /dev/shm/bb-bench.XXXXXX)
chmod 755 "$work"
pid=
trap '[ -n "$pid" ] && kill $pid 2>/dev/null && wait $pid 2>/dev/null; rm -rf "$work"' EXIT
"$BB_BIN_DIR/bb" farm --state-dir "$work/farm" --port 18980 --http-port 18982 --worker-port 18983 >"$work/farm.out" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q "Ctrl-C" "$work/farm.out" 2>/dev/null && break; sleep 0.1; done
head -n 1 "$work/farm.out"
before=$(farm_cpu_snapshot "$pid")
"$BB_BIN_DIR/examples/noop_bench" --endpoint grpc://127.0.0.1:18980 "$@" | tee "$work/bench.out"
# Every action the bench ran: the spawn floor's are local, the rest the farm's.
actions=$(awk '/sequential no-op actions through the farm/ || /no-op actions from/ { n += $1 } END { print n }' "$work/bench.out")
farm_cpu_report "$before" "$(farm_cpu_snapshot "$pid")" "$actions"
