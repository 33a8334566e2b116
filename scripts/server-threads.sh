#!/usr/bin/env bash
# Where a running server's CPU goes, thread by thread: each thread's share of a core and its
# context switches per second over a window, read from /proc (Linux). Run it against a
# server under load (`resman bench` in another shell) to see, for example, how much of a
# core the committer takes and how often it sleeps and wakes per commit.
# Usage: scripts/server-threads.sh PID [seconds]   (default 3 seconds)
#   vol/s: voluntary switches (the thread waited: a lock, a park, a sync, an idle worker);
#   invol/s: involuntary ones (it was preempted, the machine had more runnable threads than
#   cores). Threads that started or ended inside the window are left out.
set -euo pipefail
pid=${1:?usage: $0 PID [seconds]}
seconds=${2:-3}
[[ "$pid" =~ ^[0-9]+$ && "$seconds" =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 PID [seconds]" >&2; exit 2; }
[ -d "/proc/$pid/task" ] || { echo "server-threads: no process $pid" >&2; exit 1; }
hz=$(getconf CLK_TCK)

# One line per thread: tid name voluntary involuntary cpu-ticks. The name is the part of
# `stat` between the parentheses (it may hold spaces), so it is read from `comm`.
snapshot() {
    for task in "/proc/$pid/task/"*; do
        local tid=${task##*/} name switches ticks
        name=$(tr ' ' '_' <"$task/comm" 2>/dev/null) || continue
        switches=$(awk '/^voluntary_ctxt_switches/ {v = $2} /^nonvoluntary_ctxt_switches/ {n = $2}
            END {print v, n}' "$task/status" 2>/dev/null) || continue
        ticks=$(sed 's/.*) //' "$task/stat" 2>/dev/null | awk '{print $12 + $13}') || continue
        echo "$tid $name $switches $ticks"
    done | sort
}

before=$(snapshot)
sleep "$seconds"
after=$(snapshot)
printf '%-18s %7s %9s %9s\n' thread cpu vol/s invol/s
join <(echo "$before") <(echo "$after") | awk -v s="$seconds" -v hz="$hz" '
    $2 == $6 {
        printf "%-18s %6.1f%% %9.0f %9.0f\n", $2, ($9 - $5) / hz / s * 100, ($7 - $3) / s, ($8 - $4) / s
    }' | sort -k2 -t' ' -rn
