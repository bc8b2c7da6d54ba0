#!/usr/bin/env bash
# Bazel 4.2.3 downloads through the farm (--experimental_remote_downloader,
# the Remote Asset API on the scheduler's client port of `bb farm`):
#   1. a workspace whose http_archive (with sha256) is served by an HTTP
#      server on loopback builds; the farm fetched the archive;
#   2. the origin is stopped and the output base and repository cache
#      wiped: the build succeeds again, the archive coming from the farm's
#      asset cache, and the origin saw no request;
#   3. an http_archive whose sha256 is wrong fails with Bazel showing the
#      checksum error, and the farm's log (bb farm logs warnings on
#      stderr) says it stored nothing;
#   4. an origin the farm was not told to allow is refused.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"

require_tool bazel "apt-get install -y bazel-bootstrap"
require_tool python3 "apt-get install -y python3"
require_binary bb

work=$(mktemp -d /tmp/bb-downloader.XXXXXX)
chmod 755 "$work"
port=${BB_FARM_PORT:-8996}
origin_port=$((port + 4))
other_port=$((port + 5))
farm_pid=
origin_pid=
cleanup() {
  local status=$?
  [ -n "$origin_pid" ] && stop_background "$origin_pid"
  [ -n "$farm_pid" ] && stop_background "$farm_pid"
  [ "$status" = 0 ] || show_logs 30 "$work"/*.err "$work"/*.log
  (cd "$work/ws" && bazel --nohome_rc --noworkspace_rc --output_base="$work/ob" shutdown) >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# The archive: a package with one genrule.
mkdir -p "$work/src" "$work/origin" "$work/ws"
cat >"$work/src/BUILD" <<'EOF'
genrule(name = "hello", srcs = ["hello.txt"], outs = ["out.txt"], cmd = "cp $< $@")
EOF
echo "fetched through the farm $$" >"$work/src/hello.txt"
tar czf "$work/origin/asset.tar.gz" -C "$work/src" BUILD hello.txt
sha=$(sha256sum "$work/origin/asset.tar.gz" | cut -d' ' -f1)

# The workspace: the checks' offline stand-ins, and three archives.
cp -r "$BAZEL_WORKSPACE/offline" "$work/ws/"
echo offline >"$work/ws/.bazelignore"
touch "$work/ws/BUILD"
cat >"$work/ws/WORKSPACE" <<EOF
workspace(name = "downloader")
load("@bazel_tools//tools/build_defs/repo:http.bzl", "http_archive")
local_repository(name = "rules_cc", path = "offline/rules_cc")
local_repository(name = "rules_java", path = "offline/rules_java")
local_repository(name = "remote_coverage_tools", path = "offline/remote_coverage_tools")
http_archive(name = "asset", urls = ["http://127.0.0.1:$origin_port/asset.tar.gz"], sha256 = "$sha")
http_archive(name = "tampered", urls = ["http://127.0.0.1:$origin_port/asset.tar.gz"],
             sha256 = "$(printf '%064d' 0)")
http_archive(name = "elsewhere", urls = ["http://127.0.0.1:$other_port/asset.tar.gz"], sha256 = "$sha")
EOF

start_origin() {
  (cd "$work/origin" && exec python3 -m http.server "$origin_port" --bind 127.0.0.1) >>"$work/origin.log" 2>&1 &
  origin_pid=$!
  wait_for_port 127.0.0.1 "$origin_port"
}
requests_to_origin() { grep -c 'GET /asset.tar.gz' "$work/origin.log" || true; }

# Bazel with its own output base and repository cache, both wiped between
# builds, so only the farm can have the archive.
bazel_fetch() {
  local target=$1
  (cd "$work/ws" && timeout 600 bazel --nohome_rc --noworkspace_rc --output_base="$work/ob" build \
    --nosandbox_debug --color=no --curses=no --repository_cache="$work/repos" \
    --experimental_remote_downloader="grpc://127.0.0.1:$port" --remote_cache="grpc://127.0.0.1:$port" \
    --remote_timeout=120 --remote_retries=0 "$target")
}
wipe_bazel() {
  (cd "$work/ws" && bazel --nohome_rc --noworkspace_rc --output_base="$work/ob" shutdown) >/dev/null 2>&1 || true
  rm -rf "$work/ob" "$work/repos"
}

(cd "$work" && exec "$BB_BIN_DIR/bb" farm --state-dir "$work/farm" --port "$port" --http-port $((port + 2)) \
  --worker-port $((port + 3)) --slots 2 --asset-origin "http://127.0.0.1:$origin_port" \
  >"$work/farm.out" 2>"$work/farm.err") &
farm_pid=$!
deadline=$((SECONDS + 60))
until grep -q '^Ctrl-C stops the farm' "$work/farm.out" 2>/dev/null; do
  kill -0 "$farm_pid" 2>/dev/null || die "bb farm stopped: $(cat "$work/farm.err")"
  [ $SECONDS -lt $deadline ] || die "bb farm did not come up in 60s"
  sleep 0.2
done
start_origin

log "1. the archive is fetched through the farm"
bazel_fetch @asset//:hello >"$work/first.log" 2>&1 || die "the first build failed: $(tail -n 20 "$work/first.log")"
[ "$(requests_to_origin)" = 1 ] || die "the origin saw $(requests_to_origin) requests, not 1"
grep -q "fetched through the farm $$" "$work/ob/execroot/downloader/bazel-out/k8-fastbuild/bin/external/asset/out.txt" ||
  die "the built file does not hold the archive's text"

log "2. origin stopped, output base and repository cache wiped: the farm's asset cache answers"
stop_background "$origin_pid"
origin_pid=
wipe_bazel
bazel_fetch @asset//:hello >"$work/second.log" 2>&1 || die "the build without the origin failed: $(tail -n 20 "$work/second.log")"
[ "$(requests_to_origin)" = 1 ] || die "the origin was asked again"

log "3. a wrong sha256 fails with Bazel showing the checksum error"
start_origin
wipe_bazel
if bazel_fetch @tampered//:hello >"$work/tampered.log" 2>&1; then
  die "a build whose archive does not match its sha256 succeeded"
fi
grep -qiE 'checksum' "$work/tampered.log" || die "Bazel did not show a checksum error: $(tail -n 20 "$work/tampered.log")"
grep -q 'checksum mismatch.*nothing was stored' "$work/farm.err" ||
  die "the farm did not log the mismatch"
log "   Bazel: $(grep -m1 -oiE '[^:]*checksum[^$]*' "$work/tampered.log" | head -c 200)"

log "4. an origin the farm does not allow is refused"
before=$(requests_to_origin)
if bazel_fetch @elsewhere//:hello >"$work/elsewhere.log" 2>&1; then
  die "an archive from an origin the farm does not allow was fetched"
fi
grep -qE "not an allowed origin.*:$other_port/|:$other_port/.*not an allowed origin" "$work/farm.err" ||
  die "the farm did not refuse the origin by name"
[ "$(requests_to_origin)" = "$before" ] || die "the allowed origin was asked for the other one's archive"

log "remote downloader: fetched once, served from the farm without the origin, bad checksums and origins refused"
