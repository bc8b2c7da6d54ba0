#!/usr/bin/env bash
# Bazel 4.2.3 on a generated workspace of about a thousand actions (C
# compiles, genrules, static archives, one link), built four ways on this
# machine, one after the other, each from `bazel clean`:
#   local       --spawn_strategy=local (no sandbox): the floor;
#   sandboxed   Bazel's default local strategy;
#   remote      every action executed by `bb farm` (--noremote_accept_cached);
#   analysis    after `clean --expunge`, --nobuild: a new Bazel server's
#               start and analysis, which no cache can shorten;
#   cached      after `clean --expunge` (a new Bazel server), every action a
#               remote cache hit;
#   minimal     the same with --remote_download_minimal: the hits without
#               downloading the outputs;
#   disk        the same from Bazel's local --disk_cache instead of the
#               farm: what a cached rebuild costs Bazel itself;
# and prints each wall time and its ratio to the floor.
#
#   checks/bench/bazel-big.sh [--libraries N] [--sources N] [--genrules N] [--jobs N]
#                             [--rounds N] [--perf FILE]
#
# Each library has --sources C files and --genrules generated ones (a
# genrule each), archived into a static library; the binary (main.c) links them
# all: libraries * (sources + 2 * genrules + 1) + 2 actions (40 * 25 + 2 by
# default). --jobs is Bazel's for the remote builds. --rounds repeats the
# local, sandboxed and remote builds, alternating, and reports the medians. --perf records where
# the farm's processes spend their CPU in the remote build (perf record -g,
# software clock: `perf report -i FILE`). The farm's state is on
# tmpfs, as in compare.sh.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/farm-cpu.sh"
cd "$CHECKS_ROOT"
skip_unless_root "bb farm separates its users only as root"
require_tool bazel "apt-get install -y bazel-bootstrap"
build_release 2>/dev/null
require_binary bb

libraries=40 sources=16 genrules=4 jobs=8 perf_data= rounds=1
while [ $# -gt 0 ]; do
  case "$1" in
    --libraries) libraries=$2 ;;
    --sources) sources=$2 ;;
    --genrules) genrules=$2 ;;
    --jobs) jobs=$2 ;;
    --perf) perf_data=$2 ;;
    --rounds) rounds=$2 ;;
    *) die "unknown argument $1 (see the head of $0)" ;;
  esac
  shift 2
done

work=$(mktemp -d /dev/shm/bb-bazel-big.XXXXXX)
chmod 755 "$work"
pid=
cleanup() {
  BAZEL_WORKSPACE=$work/ws bazel_in "$work/bazel" shutdown >/dev/null 2>&1 || true
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# generate DIR: the workspace.
generate() {
  local ws=$1 offline=$CHECKS_ROOT/checks/bazel/workspace/offline i k g deps=()
  mkdir -p "$ws/app"
  {
    echo 'workspace(name = "bb_big")'
    for repo in rules_cc rules_java remote_coverage_tools; do
      printf 'local_repository(name = "%s", path = "%s/%s")\n' "$repo" "$offline" "$repo"
    done
  } >"$ws/WORKSPACE"
  for i in $(seq "$libraries"); do
    local dir=$ws/lib$i srcs=() header
    mkdir -p "$dir"
    header=$dir/lib$i.h
    echo "int lib${i}_all(int x);" >"$header"
    for k in $(seq "$sources"); do
      echo "int lib${i}_f$k(int x);" >>"$header"
      cat >"$dir/f$k.c" <<EOF
#include "lib$i/lib$i.h"
int lib${i}_f$k(int x) {
  int acc = $k;
  for (int j = 0; j < x % 7 + 3; j++) acc = acc * 31 + j + $i;
  return acc;
}
EOF
      srcs+=("\"f$k.c\"")
    done
    # One genrule per generated file, so each is an action of its own.
    : >"$dir/BUILD"
    for g in $(seq "$genrules"); do
      echo "int lib${i}_g$g(int x);" >>"$header"
      cat >>"$dir/BUILD" <<EOF
genrule(
    name = "gen$g",
    outs = ["g$g.c"],
    cmd = "printf 'int lib${i}_g$g(int x) { return x * $g + $i; }\\\\n' > \$@",
)
EOF
      srcs+=("\":gen$g\"")
    done
    {
      echo "int lib${i}_all(int x) {"
      echo "  int sum = 0;"
      for k in $(seq "$sources"); do echo "  sum += lib${i}_f$k(x);"; done
      for g in $(seq "$genrules"); do echo "  sum += lib${i}_g$g(x);"; done
      echo "  return sum;"
      echo "}"
    } >>"$dir/f1.c"
    local joined
    joined=$(IFS=,; echo "${srcs[*]}")
    cat >>"$dir/BUILD" <<EOF
cc_library(
    name = "lib$i",
    srcs = [$joined],
    hdrs = ["lib$i.h"],
    linkstatic = True,
    visibility = ["//visibility:public"],
)
EOF
    deps+=("\"//lib$i\"")
  done
  {
    echo '#include <stdio.h>'
    for i in $(seq "$libraries"); do echo "#include \"lib$i/lib$i.h\""; done
    echo 'int main(void) {'
    echo '  long sum = 0;'
    for i in $(seq "$libraries"); do echo "  sum += lib${i}_all($i);"; done
    echo '  printf("%ld\n", sum);'
    echo '  return 0;'
    echo '}'
  } >"$ws/app/main.c"
  local joined
  joined=$(IFS=,; echo "${deps[*]}")
  printf 'cc_binary(name = "app", srcs = ["main.c"], deps = [%s])\n' "$joined" >"$ws/app/BUILD"
}

generate "$work/ws"
export BAZEL_WORKSPACE=$work/ws
expected=$((libraries * (sources + 2 * genrules + 1) + 2))
log "workspace: $libraries libraries of $sources sources and $genrules genrules: $expected actions"

"$BB_BIN_DIR/bb" farm --state-dir "$work/farm" --port 18980 --http-port 18982 --worker-port 18983 \
  >"$work/farm.out" 2>&1 &
pid=$!
for _ in $(seq 300); do grep -q "Ctrl-C" "$work/farm.out" 2>/dev/null && break; sleep 0.1; done
grep -q "Ctrl-C" "$work/farm.out" || { cat "$work/farm.out" >&2; die "bb farm did not start"; }
remote=(--remote_executor=grpc://127.0.0.1:18980 --spawn_strategy=remote --remote_default_exec_properties=OSFamily=linux
  --remote_timeout=600 --remote_retries=0 --noremote_local_fallback --jobs="$jobs")

# timed NAME CLEAN FLAGS...: seconds of a build of //... after `bazel CLEAN`,
# checked to have run the expected actions; the summary line to stderr.
timed() {
  local name=$1 clean=$2 start end summary
  shift 2
  # shellcheck disable=SC2086 # CLEAN is the command and its flags.
  bazel_in "$work/bazel" $clean >/dev/null 2>&1
  start=$(date +%s.%N)
  bazel_in "$work/bazel" build "$@" //... >"$work/$name.log" 2>&1 || {
    tail -n 30 "$work/$name.log" >&2
    die "the $name build failed"
  }
  end=$(date +%s.%N)
  summary=$(process_summary "$work/$name.log" || echo "no actions")
  log "$name: $summary"
  awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f\n", b - a }' 
}

median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

# A first build starts the Bazel server and fills its caches of the
# toolchain; it is not measured.
bazel_in "$work/bazel" build --spawn_strategy=local //... >"$work/warm.log" 2>&1 || {
  tail -n 30 "$work/warm.log" >&2
  die "the workspace does not build"
}
[ "$(count_of local "$(process_summary "$work/warm.log")")" -eq "$expected" ] ||
  die "expected $expected local actions: $(process_summary "$work/warm.log")"

cpu_before=$(farm_cpu_snapshot "$pid")
perf_pid=
if [ -n "$perf_data" ]; then
  require_tool perf "apt-get install -y linux-perf"
  perf record -q -e cpu-clock -g -o "$perf_data" -p "$(echo "$pid" $(pgrep -P "$pid") | tr ' ' ,)" 2>/dev/null &
  perf_pid=$!
fi
# Rounds alternate, so the machine's drift reaches every kind alike.
locals=() sandboxeds=() remotes=()
for round in $(seq "$rounds"); do
  locals+=("$(timed local clean --spawn_strategy=local)")
  sandboxeds+=("$(timed sandboxed clean)")
  remotes+=("$(timed remote clean "${remote[@]}" --noremote_accept_cached)")
  [ "$(count_of remote "$(process_summary "$work/remote.log")")" -eq "$expected" ] ||
    die "expected $expected remote actions: $(process_summary "$work/remote.log")"
  log "round $round: remote $(ratio "${remotes[-1]}" "${locals[-1]}")x the local build"
done
local_s=$(median "${locals[@]}") sandboxed_s=$(median "${sandboxeds[@]}") remote_s=$(median "${remotes[@]}")
[ -z "$perf_pid" ] || { kill -INT "$perf_pid"; wait "$perf_pid" || true; }
cpu_used=$(farm_cpu_report "$cpu_before" "$(farm_cpu_snapshot "$pid")" $((expected * rounds)))
analysis_s=$(timed analysis "clean --expunge" "${remote[@]}" --nobuild)
cached_s=$(timed cached "clean --expunge" "${remote[@]}")
minimal_s=$(timed minimal "clean --expunge" "${remote[@]}" --remote_download_minimal)
# Bazel's own floor for a cached rebuild: the same from a local disk cache.
timed filling clean --spawn_strategy=local --disk_cache="$work/disk-cache" >/dev/null
disk_s=$(timed disk "clean --expunge" --spawn_strategy=local --disk_cache="$work/disk-cache")
for name in cached minimal disk; do
  [ "$(count_of "remote cache hit" "$(process_summary "$work/$name.log")")" -eq "$expected" ] ||
    die "expected $expected remote cache hits: $(process_summary "$work/$name.log")"
done

log "remote: $cpu_used"
printf '\n%-10s %9s %7s\n' build seconds ratio
for row in "local $local_s" "sandboxed $sandboxed_s" "remote $remote_s" "analysis $analysis_s" "cached $cached_s" "minimal $minimal_s" "disk $disk_s"; do
  read -r name seconds <<<"$row"
  awk -v n="$name" -v s="$seconds" -v f="$local_s" 'BEGIN { printf "%-10s %9.2f %6.2fx\n", n, s, s / f }' 
done
