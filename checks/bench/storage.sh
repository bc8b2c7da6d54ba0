#!/usr/bin/env bash
# Benchmarks a release bb-storage over loopback, once with the memory store
# and once with the disk store (fsync on), using the storage_bench example.
# Usage: checks/bench/storage.sh [SIZE]   (default 1GiB)
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
cd "$CHECKS_ROOT"
build_release 2>/dev/null
require_binary bb-storage

work=$(mktemp -d /tmp/bb-bench.XXXXXX)
pid=
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; rm -rf "$work"' EXIT
port=18981
echo "--- this disk, for reference: dd of 1 GiB with fsync"
dd if=/dev/zero of="$work/dd" bs=1M count=1024 conv=fsync 2>&1 | tail -n 1
rm -f "$work/dd"
# Disk first: a run right after the memory store's (which leaves gigabytes
# to reclaim) measures the kernel's memory reclaim more than the store.
for backend in disk memory; do
  case $backend in
    memory) store="backend = \"memory\"\nmax_size = \"4GiB\"" ;;
    disk) store="backend = \"disk\"\npath = \"$work/cas\"\nmax_size = \"8GiB\"" ;;
  esac
  printf "grpc_listen = [\"127.0.0.1:$port\"]\n[log]\nlevel = \"warn\"\n[storage.cas]\n$store\n[storage.action_cache.store]\nbackend = \"memory\"\nmax_size = \"64MiB\"\n[storage.action_cache]\n" \
    >"$work/$backend.toml"
  # Start each backend from the same state: nothing dirty, caches dropped.
  sync
  [ -w /proc/sys/vm/drop_caches ] && echo 3 >/proc/sys/vm/drop_caches
  "$BB_BIN_DIR/bb-storage" --config "$work/$backend.toml" &
  pid=$!
  wait_for_port 127.0.0.1 $port
  echo "--- $backend store"
  "$BB_BIN_DIR/examples/storage_bench" --endpoint "127.0.0.1:$port" --size "${1:-1GiB}"
  kill $pid
  wait $pid || true
  pid=
done
