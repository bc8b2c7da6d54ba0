# Where a `bb farm`'s CPU goes: sourced by the benchmarks.
# shellcheck shell=bash

# farm_cpu_snapshot FARM_PID: a line per process of the farm (bb farm
# itself, the scheduler, worker and runner it started, and the runner's
# zygote): its role, the CPU ticks (user and system) it used itself, and
# those of the children it reaped (for the zygote: the actions' sandboxes,
# each init with what it reaped).
farm_cpu_snapshot() {
  local p z
  for p in "$1" $(pgrep -P "$1"); do
    farm_cpu_line "$p" "$(tr '\0' ' ' <"/proc/$p/cmdline" | awk '{ print $2 }')"
    for z in $(pgrep -x -P "$p" bb-zygote); do farm_cpu_line "$z" zygote; done
  done
}

# farm_cpu_line PID ROLE: ROLE, and PID's own and reaped children's ticks.
farm_cpu_line() {
  sed 's/^.*) //' "/proc/$1/stat" | awk -v role="$2" '{ print role, $12 + $13, $14 + $15 }'
}

# farm_cpu_report BEFORE AFTER ACTIONS: from two snapshots, the CPU the
# farm's processes and the actions' used in between, per action in ms.
farm_cpu_report() {
  paste -d ' ' <(echo "$1") <(echo "$2") | awk -v n="$3" -v hz="$(getconf CLK_TCK)" '
    { own = ($5 - $2) * 1000 / hz / n; total += own; reaped += ($6 - $3) * 1000 / hz / n
      each = each sprintf("%s %.2f, ", $1, own) }
    END { printf "the farm'\''s processes used %.2f ms of CPU per action (%s); the actions'\'' sandboxes %.2f ms\n",
            total, substr(each, 1, length(each) - 2), reaped }'
}
