#!/usr/bin/env bash
# The farm across hosts, with network namespaces standing in for machines:
#   scheduler  10.250.0.1    bb scheduler (embedded storage)
#   worker1    10.250.0.11   bb runner (as bb-runner) + bb worker (as bb-worker)
#   worker2    10.250.0.12   the same
#   client     10.250.0.100  bb exec
# joined by veth links to a bridge in a fifth namespace. It runs a batch of
# actions (both worker hosts must run some), then cuts the link of the host
# running a long action: the action must be re-queued, finish on the other
# host, and the client must see success. Everything it starts it stops, and
# the namespaces are removed, also on failure. Needs root.
# Every connection is TLS: the workers present certificates of the farm's
# CA (mutual TLS; the worker API takes nothing else), the client a token.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

skip_unless_root "the multi-host test needs root (network namespaces, users)"
require_tool ip "apt-get install -y iproute2"
require_tool setpriv "apt-get install -y util-linux"
require_tool python3 "apt-get install -y python3"
require_tool openssl "apt-get install -y openssl"
require_binary bb

prefix="bbmh$$"
hosts=(scheduler worker1 worker2 client)
declare -A address=([scheduler]=10.250.0.1 [worker1]=10.250.0.11 [worker2]=10.250.0.12 [client]=10.250.0.100)
work=$(mktemp -d /tmp/bb-multihost.XXXXXX)
chmod 755 "$work"
pids=()

cleanup() {
  local status=$?
  stop_background "${pids[@]}"
  [ "$status" = 0 ] || show_logs 20 "$work"/*.log
  for host in "${hosts[@]}" lan; do ip netns del "$prefix-$host" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

in_host() { local host=$1; shift; ip netns exec "$prefix-$host" "$@"; }
# Starts a command on a host in the background; $! is then the command itself
# (ip and setpriv exec it), so cleanup can stop it.
start_in() { local host=$1; shift; (exec ip netns exec "$prefix-$host" "$@") & }

# --- The network: a bridge in "lan", one veth link per host.
ip netns add "$prefix-lan"
ip -n "$prefix-lan" link add br0 type bridge
ip -n "$prefix-lan" link set br0 up
for host in "${hosts[@]}"; do
  ip netns add "$prefix-$host"
  ip -n "$prefix-$host" link set lo up
  ip link add "$prefix-${host:0:3}${host: -1}" type veth peer name eth0 netns "$prefix-$host"
  ip link set "$prefix-${host:0:3}${host: -1}" netns "$prefix-lan"
  ip -n "$prefix-lan" link set "$prefix-${host:0:3}${host: -1}" master br0 up
  ip -n "$prefix-$host" addr add "${address[$host]}/24" dev eth0
  ip -n "$prefix-$host" link set eth0 up
done

# --- Users, as on real worker hosts.
ensure_farm_users

# --- Credentials: a CA, certificates for the scheduler and each worker
# host, a token for the client.
tls=$work/tls
install -d -m 0755 "$tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=multihost-ca \
  -keyout "$tls/ca-key.pem" -out "$tls/ca.pem" 2>/dev/null
# issue NAME SUBJECT_ALT_NAME: NAME.pem and NAME-key.pem, signed by the CA.
issue() {
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$1" \
    -keyout "$tls/$1-key.pem" -out "$tls/$1.csr" 2>/dev/null
  openssl x509 -req -in "$tls/$1.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca-key.pem" -CAcreateserial -days 1 \
    -out "$tls/$1.pem" -extfile <(printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n' "$2") 2>/dev/null
}
issue scheduler "IP:${address[scheduler]}"
for host in worker1 worker2; do
  issue "$host" "DNS:$host"
  chown bb-worker "$tls/$host-key.pem"
done
token=$(openssl rand -hex 32)
printf '%s\n' "$token" >"$tls/client-token"
chmod 600 "$tls/client-token"
printf 'client = "%s"\n' "$(printf '%s' "$token" | sha256sum | cut -d' ' -f1)" >"$tls/tokens.toml"

# --- The scheduler host.
cat >"$work/scheduler.toml" <<EOF
client_listen = ["${address[scheduler]}:8980"]
worker_listen = ["${address[scheduler]}:8983"]
http_listen = "${address[scheduler]}:7982"
[tls]
certificate = "$tls/scheduler.pem"
private_key = "$tls/scheduler-key.pem"
[authentication]
client_ca = "$tls/ca.pem"
tokens_file = "$tls/tokens.toml"
listeners = { worker = ["certificate"] }
[[authentication.policy]]
identities = ["worker1", "worker2"]
permissions = ["worker"]
[[authentication.policy]]
identities = ["client"]
permissions = ["execute", "read", "write-cas"]
[scheduler]
default_action_timeout = "5m"
maximum_action_timeout = "1h"
keepalive_interval = "5s"
client_disconnect_grace = "60s"
completed_retention = "5m"
worker_timeout = "4s"
executing_sync_interval = "1s"
idle_sync_wait = "2s"
max_attempts = 3
unmatched_platform_timeout = "60s"
[storage.cas]
backend = "disk"
path = "$work/scheduler/cas"
max_size = "1GiB"
[storage.action_cache]
[storage.action_cache.store]
backend = "disk"
path = "$work/scheduler/ac"
max_size = "64MiB"
EOF
start_in scheduler "$BB_BIN_DIR/bb" scheduler --config "$work/scheduler.toml" >"$work/scheduler.log" 2>&1
pids+=($!)

# --- Two worker hosts.
for host in worker1 worker2; do
  dir="$work/$host"
  install -d -m 0755 "$dir"
  install -d -o bb-worker -g bb-worker -m 0711 "$dir/build"
  install -d -o bb-worker -g bb-worker -m 0700 "$dir/cache"
  install -d -o bb-runner -g bb-runner -m 0750 "$dir/run"
  # Both "hosts" share this machine's bb-runner user, so neither may kill
  # all of that user's processes (the other's actions would go too).
  cat >"$dir/runner.toml" <<EOF
listen = "unix:$dir/run/runner.sock"
build_directory = "$dir/build"
kill_user_processes = false
EOF
  cat >"$dir/worker.toml" <<EOF
scheduler = "grpcs://${address[scheduler]}:8983"
storage = "grpcs://${address[scheduler]}:8980"
tls = { ca = "$tls/ca.pem", certificate = "$tls/$host.pem", private_key = "$tls/$host-key.pem" }
runner = "unix:$dir/run/runner.sock"
build_directory = "$dir/build"
cache_directory = "$dir/cache"
cache_max_size = "1GiB"
cache_max_files = 100000
concurrency = 2
name = "$host"
platform = [{ name = "OSFamily", value = "linux" }]
shutdown_grace = "5s"
EOF
  start_in "$host" setpriv --reuid bb-runner --regid bb-runner --init-groups --bounding-set -all --inh-caps -all -- \
    "$BB_BIN_DIR/bb" runner --config "$dir/runner.toml" >"$work/$host-runner.log" 2>&1
  pids+=($!)
  start_in "$host" setpriv --reuid bb-worker --regid bb-worker --init-groups --bounding-set -all --inh-caps -all -- \
    "$BB_BIN_DIR/bb" worker --config "$dir/worker.toml" >"$work/$host-worker.log" 2>&1
  pids+=($!)
done

credentials=(--tls-ca "$tls/ca.pem" --token-file "$tls/client-token")
endpoint="grpcs://${address[scheduler]}:8980"
status_page="https://${address[scheduler]}:7982"
workers_registered() {
  in_host client "$BB_BIN_DIR/bb" status --status "$status_page" "${credentials[@]}" --json 2>/dev/null |
    python3 -c 'import json,sys; print(len({w["labels"]["host"] for w in json.load(sys.stdin)["workers"]}))' 2>/dev/null || echo 0
}
for _ in $(seq 100); do [ "$(workers_registered)" = 2 ] && break; sleep 0.2; done
[ "$(workers_registered)" = 2 ] || die "the two worker hosts did not register (over the veth links)"

log "without the token, and in plaintext, the client is refused"
if err=$(in_host client "$BB_BIN_DIR/bb" exec --endpoint "$endpoint" --tls-ca "$tls/ca.pem" -- true 2>&1); then
  die "a client without a token got in"
fi
grep -q "not authenticated" <<<"$err" || die "no authentication error: $err"
if in_host client "$BB_BIN_DIR/bb" exec --endpoint "grpc://${address[scheduler]}:8980" -- true >/dev/null 2>&1; then
  die "plaintext got through to the TLS port"
fi

# --- A batch of actions: both hosts run some.
log "running a batch of actions from the client"
for i in $(seq 1 16); do
  start_in client "$BB_BIN_DIR/bb" exec --endpoint "$endpoint" "${credentials[@]}" -v -- sh -c "sleep 0.3; echo batch-$i-$$" \
    >"$work/batch-$i.out" 2>"$work/batch-$i.err"
  pids+=($!)
  [ $((i % 4)) = 0 ] && wait "${pids[-1]}" "${pids[-2]}" "${pids[-3]}" "${pids[-4]}"
done
for i in $(seq 1 16); do
  grep -q "^batch-$i-$$\$" "$work/batch-$i.out" || die "action $i returned no output: $(cat "$work/batch-$i.err")"
done
ran_on=$(grep -ho 'worker=[a-z0-9]*' "$work"/batch-*.err | sort | uniq -c)
log "batch ran on: $(echo $ran_on)"
grep -q worker1 <<<"$ran_on" || die "worker1 ran none of the batch"
grep -q worker2 <<<"$ran_on" || die "worker2 ran none of the batch"

# --- A long action; cut the link of the host running it.
log "a long action, and the link of its worker host cut"
start_in client "$BB_BIN_DIR/bb" exec --endpoint "$endpoint" "${credentials[@]}" -v -- sh -c "sleep 6; echo survived-$$" \
  >"$work/long.out" 2>"$work/long.err"
client_pid=$!
pids+=($client_pid)
running_on=""
for _ in $(seq 100); do
  running_on=$(in_host client "$BB_BIN_DIR/bb" status --status "$status_page" "${credentials[@]}" --json |
    python3 -c 'import json,sys; print(" ".join(w["labels"]["host"] for w in json.load(sys.stdin)["workers"] if w["operation"]))')
  [ -n "$running_on" ] && break
  sleep 0.1
done
[ -n "$running_on" ] || die "the long action never started"
victim=${running_on%% *}
survivor=worker1
[ "$victim" = worker1 ] && survivor=worker2
log "the action runs on $victim: cutting its link"
ip -n "$prefix-$victim" link set eth0 down
wait "$client_pid" || die "the client saw a failure: $(cat "$work/long.err")"
grep -q "^survived-$$\$" "$work/long.out" || die "the long action's output is missing"
grep -q "worker=$survivor" "$work/long.err" || die "the action did not finish on $survivor: $(cat "$work/long.err")"
log "PASS: both hosts ran actions; after $victim was cut off, $survivor finished its action and the client saw success"
