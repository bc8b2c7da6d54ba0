#!/usr/bin/env bash
# A farm that only lets its own clients in:
#   1. `bb farm --tls` prints the Bazel and bb flags in the documented form;
#      bb builds through it with those flags alone; without the token, with
#      a wrong one, and in plaintext it is refused; the status page wants
#      the token.
#   2. Bazel 4.2.3 builds the checks workspace, every action remote, with
#      the flags the farm printed; without the header Bazel shows the
#      authentication error. Debian's Bazel cannot speak TLS at all (its
#      netty has no ALPN: "JDK provider does not support ALPN protocol"),
#      so where that is the case the check says so and runs Bazel against
#      `bb farm --require-token`, the same authentication over loopback
#      plaintext. A Bazel that speaks TLS is taken through --tls itself.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"

require_tool bazel "apt-get install -y bazel-bootstrap"
require_tool curl "apt-get install -y curl"
require_binary bb

work=$(mktemp -d /tmp/bb-secure.XXXXXX)
chmod 755 "$work"
port=${BB_FARM_PORT:-8990}
farm_pid=
stop_farm() {
  [ -n "$farm_pid" ] && stop_background "$farm_pid"
  farm_pid=
}
cleanup() {
  local status=$?
  stop_farm
  [ "$status" = 0 ] || show_logs 30 "$work"/*.err "$work"/*/worker-*/*.log
  bazel_in "$work/bazel" shutdown >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# start_farm NAME FLAGS...: a farm with its state in $work/NAME; its banner
# is in $work/NAME.out.
start_farm() {
  local name=$1
  shift
  (cd "$work" && exec "$BB_BIN_DIR/bb" farm --state-dir "$work/$name" --port "$port" --http-port $((port + 2)) \
    --worker-port $((port + 3)) --slots 4 "$@" >"$work/$name.out" 2>"$work/$name.err") &
  farm_pid=$!
  local deadline=$((SECONDS + 60))
  until grep -q '^Ctrl-C stops the farm' "$work/$name.out" 2>/dev/null; do
    kill -0 "$farm_pid" 2>/dev/null || die "bb farm $* stopped: $(cat "$work/$name.err")"
    [ $SECONDS -lt $deadline ] || die "bb farm $* did not come up in 60s"
    sleep 0.2
  done
  cat "$work/$name.out" >&2
}

# The line after "Bazel flags:" and after "bb flags:" of a banner.
flags_after() { grep -A1 "^$1" "$2" | tail -n 1 | sed 's/^ *//'; }

bazel_flags=(--spawn_strategy=remote --remote_default_exec_properties=OSFamily=linux --remote_timeout=600
  --remote_retries=0 --noremote_local_fallback --jobs=8 --noremote_accept_cached)

# bazel_through FLAGS_LINE: builds the workspace with the printed flags.
# The header's value holds a space, so the line is split by hand.
bazel_through() {
  local line=$1 executor tls header
  executor=$(grep -oE -- '--remote_executor=[^ ]+' <<<"$line")
  tls=$(grep -oE -- '--tls_certificate=[^ ]+' <<<"$line" || true)
  header=$(grep -oE -- '--remote_header=authorization=Bearer [0-9a-f]+' <<<"$line")
  bazel_in "$work/bazel" build "$executor" ${tls:+"$tls"} "$header" "${bazel_flags[@]}" //...
}

log "bb farm --tls: the flags it prints"
start_farm tls --tls
line=$(flags_after "Bazel flags:" "$work/tls.out")
[[ "$line" =~ ^--remote_executor=grpcs://[^\ ]+:$port\ --tls_certificate=/[^\ ]+/ca\.pem\ --remote_header=authorization=Bearer\ [0-9a-f]{64}$ ]] ||
  die "the Bazel flags are not in the documented form: $line"
read -r -a bb_flags <<<"$(flags_after "bb flags:" "$work/tls.out")"
endpoint=${bb_flags[1]}
ca=$(grep -oE -- '--tls_certificate=[^ ]+' <<<"$line" | cut -d= -f2)
token=$(grep -oE '[0-9a-f]{64}$' <<<"$line")

log "bb exec with the printed flags, and without credentials"
out=$("$BB_BIN_DIR/bb" exec "${bb_flags[@]}" -- echo through-tls) || die "bb exec with the printed flags failed"
[ "$out" = through-tls ] || die "bb exec printed $out"
if err=$("$BB_BIN_DIR/bb" exec --endpoint "$endpoint" --tls-ca "$ca" -- true 2>&1); then
  die "bb exec without a token got in"
fi
grep -q "not authenticated" <<<"$err" || die "no authentication error shown: $err"
if err=$("$BB_BIN_DIR/bb" exec --endpoint "$endpoint" --tls-ca "$ca" --token wrong -- true 2>&1); then
  die "bb exec with a wrong token got in"
fi
grep -q "not known" <<<"$err" || die "a wrong token is not named as such: $err"
if "$BB_BIN_DIR/bb" exec --endpoint "grpc://127.0.0.1:$port" --token "$token" -- true >/dev/null 2>&1; then
  die "plaintext to the TLS port got through"
fi

log "the status page over HTTPS wants the token"
page=https://localhost:$((port + 2))/
code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$ca" "$page")
[ "$code" = 401 ] || die "the status page without the token answered $code"
code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$ca" -u "me:$token" "$page")
[ "$code" = 200 ] || die "the status page with the token answered $code"

log "Bazel with the flags bb farm --tls printed"
if bazel_through "$line" >"$work/bazel-tls.log" 2>&1; then
  log "Bazel built through TLS"
  tls_built=yes
elif grep -q "does not support ALPN" "$work/bazel-tls.log" "$work/bazel"/java.log 2>/dev/null; then
  log "BLOCKED here: this Bazel cannot speak TLS (its netty has no ALPN); Bazel goes through --require-token"
  tls_built=
else
  cat "$work/bazel-tls.log"
  die "Bazel failed through bb farm --tls"
fi
stop_farm
bazel_in "$work/bazel" shutdown >/dev/null 2>&1 || true

if [ -z "$tls_built" ]; then
  start_farm token --require-token
  line=$(flags_after "Bazel flags:" "$work/token.out")
  bazel_through "$line" >"$work/bazel.log" 2>&1 || { cat "$work/bazel.log"; die "Bazel with the printed flags failed"; }
  built=$work/bazel.log
else
  built=$work/bazel-tls.log
fi
summary=$(every_action_remote "$built")
log "with the token: $summary"

log "Bazel without the header"
executor=$(grep -oE -- '--remote_executor=[^ ]+' <<<"$line")
tls=$(grep -oE -- '--tls_certificate=[^ ]+' <<<"$line" || true)
if bazel_in "$work/bazel" build "$executor" ${tls:+"$tls"} "${bazel_flags[@]}" //... >"$work/refused.log" 2>&1; then
  die "Bazel without the token built"
fi
grep -q "UNAUTHENTICATED" "$work/refused.log" || { cat "$work/refused.log"; die "Bazel shows no authentication error"; }
log "refused: $(grep -m1 UNAUTHENTICATED "$work/refused.log")"
