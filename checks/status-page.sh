#!/usr/bin/env bash
# The status page in a real browser: headless Chromium against `bb farm`
# after a few actions (one failing, with markup in its file names and its
# output), following links the way a person would:
#   1. the overview lists the operations;
#   2. the failed action's link (from the message bb exec prints) opens its
#      action page: the command, the rerun lines, the result, stderr shown
#      as text, never as markup;
#   3. its input root, a directory in it and a file in that, shown escaped;
# asserting on the DOM Chromium built (--dump-dom), and saving screenshots
# (BB_SCREENSHOTS=DIR keeps them).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

require_tool chromium "apt-get install -y chromium"
require_tool python3 "apt-get install -y python3"
require_tool curl "apt-get install -y curl"
require_binary bb

work=$(mktemp -d /tmp/bb-status-page.XXXXXX)
chmod 755 "$work"
port=${BB_STATUS_PORT:-8760}
http=$((port + 2))
farm_pid=
cleanup() {
  local status=$?
  [ -n "$farm_pid" ] && kill "$farm_pid" 2>/dev/null && wait "$farm_pid" 2>/dev/null
  [ "$status" != 0 ] && show_logs 30 "$work"/farm.err "$work"/bb-farm/worker-*/*.log
  rm -rf "$work"
}
trap cleanup EXIT

for p in "$port" "$http" $((port + 3)); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then die "port $p is in use; set BB_STATUS_PORT"; fi
done
(cd "$work" && exec "$BB_BIN_DIR/bb" farm --port "$port" --http-port "$http" --worker-port $((port + 3)) \
  --slots 2 >"$work/farm.out" 2>"$work/farm.err") &
farm_pid=$!
wait_for_port 127.0.0.1 "$http" 60
export BB_ENDPOINT=grpc://127.0.0.1:$port BB_STATUS_URL=http://127.0.0.1:$http
screenshots=${BB_SCREENSHOTS:-$work/screenshots}
mkdir -p "$screenshots"

# dom PATH NAME: the DOM Chromium builds for the page, saved as NAME.html,
# with a screenshot NAME.png.
dom() {
  local url="http://127.0.0.1:$http$1" flags=(--headless --no-sandbox --disable-gpu --no-first-run
    --user-data-dir="$work/chromium" --window-size=1280,1400)
  chromium "${flags[@]}" --dump-dom "$url" >"$work/$2.html" 2>>"$work/chromium.log" ||
    die "Chromium could not load $url (see $work/chromium.log)"
  chromium "${flags[@]}" --screenshot="$screenshots/$2.png" "$url" >/dev/null 2>>"$work/chromium.log" ||
    die "Chromium could not take a screenshot of $url"
  [ -s "$screenshots/$2.png" ] || die "no screenshot of $url"
}
# expect NAME TEXT...: each TEXT is in the page's DOM.
expect() {
  local name=$1 text
  shift
  for text in "$@"; do
    grep -qF -- "$text" "$work/$name.html" || die "the $name page lacks: $text"
  done
}
# href NAME PREFIX: the first link on the page that starts with PREFIX.
href() {
  grep -oE "href=\"$2[^\"]*\"" "$work/$1.html" | head -n 1 | sed -e 's/^href="//' -e 's/"$//' -e 's/&amp;/\&/g'
}

log "a few actions: one with an input tree and markup in its names and output, failing"
mkdir -p "$work/in/sub"
echo 'int answer = 42; /* <b>not bold</b> */' >"$work/in/sub/<img src=x onerror=alert(1)>.c"
echo 'data' >"$work/in/top.txt"
"$BB_BIN_DIR/bb" exec -- true >/dev/null 2>&1 || die "bb exec true failed"
"$BB_BIN_DIR/bb" exec -- sh -c 'echo hello from the farm' >/dev/null 2>&1 || die "bb exec echo failed"
status=0
(cd "$work" && "$BB_BIN_DIR/bb" exec --input in -- sh -c 'cat sub/*.c; echo "<i>failed</i> & done" >&2; exit 3') \
  >"$work/exec.out" 2>"$work/exec.err" || status=$?
[ "$status" = 3 ] || die "the failing action exited $status: $(cat "$work/exec.err")"
details=$(grep -oE "Details of this action: http://[^ ]+" "$work/exec.err" | sed 's/^Details of this action: //')
[ -n "$details" ] || die "bb exec did not print the action's link: $(cat "$work/exec.err")"
action_path=${details#http://*/}
action_path=/$action_path
log "   bb exec printed $details"

log "the overview and an operation"
dom / overview
expect overview "Workers (" "Operations (" "completed"
operation=$(href overview /operation/)
[ -n "$operation" ] || die "the overview links to no operation"
dom "$operation" operation
expect operation "Operation " "/action/sha256/"

log "the failed action's page"
dom "$action_path" action
expect action "Kept in the CAS as" "Run it again" "bb action download sha256:" "--no-cache -- sh -c" \
  "&lt;i&gt;failed&lt;/i&gt; &amp; done" "<td class=\"bad\">3</td>" "top.txt"
if grep -qE "<i>failed|<b>not|<img" "$work/action.html"; then die "the build's markup reached the action page's DOM"; fi

log "its input root, a directory in it, a file in that"
dom "$(href action /directory/)" root
expect root "Directory /" "top.txt"
dom "$(grep -oE 'href="/directory/[^"]*path=sub"' "$work/root.html" | head -n 1 | sed -e 's/^href="//' -e 's/"$//' -e 's/&amp;/\&/g')" sub
expect sub "Directory /sub" "&lt;img src=x onerror=alert(1)&gt;.c"
if grep -q "<img" "$work/sub.html"; then die "a file name became markup"; fi
dom "$(href sub /file/)" file
expect file "int answer = 42; /* &lt;b&gt;not bold&lt;/b&gt; */" "download"
if grep -q "<b>not bold" "$work/file.html"; then die "the file's contents became markup"; fi

log "the operations filtered by outcome, and the charts"
dom "/?outcome=nonzero_exit" failed
expect failed "Operations (1 of" "nonzero_exit"
# The actions above completed after the first sample; the next one (every
# 10 s) counts them.
for _ in $(seq 30); do
  samples=$(curl -sf "$BB_STATUS_URL/api/history" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["samples"]))')
  [ "$samples" -ge 2 ] && break
  sleep 1
done
[ "$samples" -ge 2 ] || die "the scheduler took no second sample of its queue in 30s"
dom /charts charts
expect charts "Operations queued and executing, per queue" "Actions completed per minute, by outcome" \
  "Worker utilisation" "<svg" "<polyline" "<rect" "nonzero_exit: 1" "success: 2"

log "PASS: overview, operation, action, directories, a file and the charts rendered in Chromium; screenshots in $screenshots"
