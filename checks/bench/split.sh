#!/usr/bin/env bash
# What chunked uploads (SplitBlob/SpliceBlob, FastCDC 2020) save: a release
# bb-storage with disk stores over loopback, the split_bench example
# uploading a blob and the same blob with a region in the middle changed,
# whole and split. Usage: checks/bench/split.sh [SIZE [CHANGE]]
# (default 1GiB and 1MiB).
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
cd "$CHECKS_ROOT"
build_release 2>/dev/null
require_binary bb-storage

work=$(mktemp -d /tmp/bb-split-bench.XXXXXX)
pid=
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; rm -rf "$work"' EXIT
port=18982
cat >"$work/storage.toml" <<TOML
grpc_listen = ["127.0.0.1:$port"]
[log]
level = "warn"
[storage.cas]
backend = "disk"
path = "$work/data/cas"
max_size = "16GiB"
[storage.action_cache]
[storage.action_cache.store]
backend = "disk"
path = "$work/data/ac"
max_size = "1GiB"
TOML
"$BB_BIN_DIR/bb-storage" --config "$work/storage.toml" &
pid=$!
wait_for_port 127.0.0.1 $port
# "stored" counts the CAS and the Action Cache's store (where the records
# of spliced blobs are).
"$BB_BIN_DIR/examples/split_bench" --endpoint "grpc://127.0.0.1:$port" --cas-dir "$work/data" \
  --size "${1:-1GiB}" --change "${2:-1MiB}"
