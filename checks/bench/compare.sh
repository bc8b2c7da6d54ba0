#!/usr/bin/env bash
# The no-op benchmark against `bb farm` in several variants, alternating,
# so each is measured in the same conditions as the others:
#   checks/bench/compare.sh ROUNDS NAME=FLAGS... (FLAGS: bb farm's, split on
#   spaces; a --tls farm is reached with the bb flags it prints).
# Release build, as root (worker and runner as users of their own). The
# farm's state is on tmpfs (/dev/shm): on a filesystem without a journal, as
# this machine's root is, ext4 scans every recently deleted inode on each
# file it creates, which at hundreds of actions a second costs more than
# anything the farm does and hides what is being compared.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
cd "$CHECKS_ROOT"
skip_unless_root "bb farm separates its users only as root"
build_release 2>/dev/null
require_binary bb

rounds=$1
shift
work=$(mktemp -d /dev/shm/bb-bench.XXXXXX)
chmod 755 "$work"
pid=
trap '[ -n "$pid" ] && kill $pid 2>/dev/null && wait $pid 2>/dev/null; rm -rf "$work"' EXIT
for round in $(seq "$rounds"); do
  for variant in "$@"; do
    name=${variant%%=*}
    read -r -a flags <<<"${variant#*=}"
    rm -rf "$work/farm"
    "$BB_BIN_DIR/bb" farm --state-dir "$work/farm" --port 18980 --http-port 18982 --worker-port 18983 \
      "${flags[@]}" >"$work/farm.out" 2>&1 &
    pid=$!
    for _ in $(seq 100); do grep -q "Ctrl-C" "$work/farm.out" 2>/dev/null && break; sleep 0.1; done
    grep -q "Ctrl-C" "$work/farm.out" || die "bb farm did not start: $(cat "$work/farm.out")"
    client=(--endpoint grpc://127.0.0.1:18980)
    if grep -q '^bb flags:' "$work/farm.out"; then
      read -r -a client <<<"$(grep -A1 '^bb flags:' "$work/farm.out" | tail -n 1)"
    fi
    echo "== $name, round $round"
    "$BB_BIN_DIR/examples/noop_bench" "${client[@]}" --actions 400 --throughput-actions 1000
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    pid=
  done
done
