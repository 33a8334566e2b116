#!/usr/bin/env bash
# resman's durable pool round trips against Redis with an append-only file, at the same
# connections and pipeline, in one run, printed as ratios.
#   resman: the proxy-pool plugin, getProxy then releaseProxy with the lease it answered
#           (`resman bench --step` chains); every grant and release is journaled and fsync'd
#           (group commit) before it is answered.
#   Redis:  LMOVE free held LEFT RIGHT on a list prefilled so that it never runs empty, with
#           appendfsync everysec (up to a second of writes lost in a crash) and with
#           appendfsync always (fsync'd before the answer, as resman does).
# Both count requests, each one durable change: a resman round trip is two (grant, release).
# Under each row, "CPU": each server's CPU time (user + system, from /proc) per request, and
# resman's as a multiple of Redis's. Servers and load generators share the machine, so CPU per
# request says how much of it each server needs, however busy the machine was. "gen": the
# same for each load generator (`resman bench`, `redis-benchmark`): what the generator takes
# the server cannot have, so requests per second compare fairly only while these are alike.
# Needs redis-server, redis-cli and redis-benchmark (Debian: redis-server), and python3.
# Usage: scripts/bench-pools.sh [requests-per-setting] [rounds]
#   rounds (default 1): each setting is measured this many times, the three servers one after
#   another in each round, and a last row gives the median of the rounds' ratios. On a shared
#   machine one run can be off by 10-20%; the median of 3 or 5 interleaved rounds is steadier.
#   RESMAN_THREADS=n sets serve --threads; BENCH_DIR=folder holds the data files (default
#   /var/tmp; it must be on a disk, not tmpfs, or fsync costs nothing).
set -euo pipefail
shopt -s inherit_errexit # a failure inside $(...) fails the assignment that runs it
cd "$(dirname "$0")/.."
requests=${1:-200000}
rounds=${2:-1}
settings=("50 1" "50 16")
proxies=4000 # more than connections x pipeline, plus the leases a run may end holding
mport=46971; everysec_port=46381; always_port=46382
declare -A server_pid # name → pid, for its CPU time

die() { echo "bench-pools: $*" >&2; exit 1; }
[[ "$requests" =~ ^[1-9][0-9]*$ && "$rounds" =~ ^[1-9][0-9]*$ ]] ||
    die "usage: $0 [requests-per-setting] [rounds]"
for tool in redis-server redis-cli redis-benchmark python3; do
    command -v "$tool" >/dev/null || die "$tool not found (Debian: apt install redis-server)"
done

cargo build --release -p resman --quiet
./scripts/build-plugins.sh release >/dev/null
resman=target/release/resman
plugin=target/plugins/release/proxy-pool.wasm
[ -f "$plugin" ] || die "$plugin is missing after scripts/build-plugins.sh release"

work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/bench-pools.XXXXXX")
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
[ "$(stat -f -c %T "$work")" != tmpfs ] ||
    echo "bench-pools: warning: $work is on tmpfs, where fsync costs nothing; set BENCH_DIR" >&2

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_for NAME PID LOG COMMAND...: polls COMMAND until it succeeds; fails with the server's
# log when the server exits or 30 s pass.
wait_for() {
    local name=$1 pid=$2 log=$3 tries=0
    shift 3
    until "$@" >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null || [ $((tries += 1)) -gt 300 ]; then
            tail -n 20 "$log" >&2
            die "$name did not come up (log above)"
        fi
        sleep 0.1
    done
}

start_redis() { # name port fsync-policy
    port_free "$2" || die "port $2 is in use; stop what listens there"
    mkdir -p "$work/$1"
    redis-server --port "$2" --dir "$work/$1" --appendonly yes --appendfsync "$3" --save '' \
        --daemonize no >"$work/$1.log" 2>&1 &
    pids+=($!)
    server_pid[$1]=$!
    wait_for "$1" $! "$work/$1.log" redis-cli -p "$2" ping
}

start_resman() {
    port_free $mport || die "port $mport is in use; stop what listens there"
    mkdir -p "$work/plugins"
    cp "$plugin" "$work/plugins/"
    $resman serve --port $mport --plugins "$work/plugins" --data-dir "$work/resman-data" \
        --cache-dir "$work/cache" ${RESMAN_THREADS:+--threads "$RESMAN_THREADS"} \
        >"$work/resman.log" 2>&1 &
    pids+=($!)
    server_pid[resman]=$!
    wait_for resman $! "$work/resman.log" $resman call proxyStatus --addr 127.0.0.1:$mport --timeout 1s
}

add_proxies() { # 10.x.y.z:3128, 500 per addProxy
    local from answer
    for ((from = 0; from < proxies; from += 500)); do
        answer=$($resman call addProxy --addr 127.0.0.1:$mport "$(python3 -c "
import json, sys
start, end = int(sys.argv[1]), int(sys.argv[2])
ips = [f'10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}:3128' for i in range(start, end)]
print(json.dumps({'proxies': ips}))" "$from" $((from + 500 < proxies ? from + 500 : proxies)))") ||
            die "addProxy failed: $answer"
    done
}

fill_redis() { # port count: `free` holds exactly count elements, `held` none
    redis-cli -p "$1" del free held >/dev/null
    python3 - "$2" <<'PY' | redis-cli -p "$1" --pipe >/dev/null
import sys
out, total = sys.stdout.buffer, int(sys.argv[1])
for start in range(0, total, 1000):
    args = [b"RPUSH", b"free"] + [b"p%d" % i for i in range(start, min(total, start + 1000))]
    out.write(b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args))
PY
    [ "$(redis-cli -p "$1" llen free)" = "$2" ] || die "could not fill list free on port $1"
}

hz=$(getconf CLK_TCK)
cpu_ticks() { # name → the server's user + system CPU time so far, in clock ticks
    awk '{ print $14 + $15 }' "/proc/${server_pid[$1]}/stat"
}

cpu_per_request() { # name ticks-before requests → "µs of its CPU per request"
    python3 -c "print(f'{($(cpu_ticks "$1") - $2) / $hz * 1e6 / $3:.2f}')"
}

# generator_cpu requests: the CPU (user + system) the last timed load generator took, per
# request, from the file `time` wrote it to.
TIMEFORMAT='%U %S'
generator_cpu() {
    python3 -c "import sys; u, s = map(float, open(sys.argv[1]).read().split()[-2:])
print(f'{(u + s) * 1e6 / int(sys.argv[2]):.2f}')" "$work/generator.time" "$1"
}

redis_lmove() { # port c P n → "rps p99_ms generator_us"; `free` filled by fill_redis first
    local out
    out=$( { time redis-benchmark -p "$1" -c "$2" -P "$3" -n "$4" --csv LMOVE free held LEFT RIGHT \
        2>&3; } 3>&2 2>"$work/generator.time" | tail -n 1)
    # "LMOVE free held LEFT RIGHT","rps","avg","min","p50","p95","p99","max"
    [ "$(redis-cli -p "$1" llen free)" -gt 0 ] || die "list free ran empty on port $1"
    echo "$(echo "$out" | python3 -c 'import csv,sys; r=next(csv.reader(sys.stdin)); print(round(float(r[1])), r[6])'
    ) $(generator_cpu "$4")"
}

resman_chain() { # c P n → "rps p99_ms generator_us errors first-error"
    local out
    out=$( { time $resman bench --addr 127.0.0.1:$mport -c "$1" -P "$2" -n "$3" --json \
        --step getProxy='{}' --step 'releaseProxy={"lease":{{lease}}}' 2>&3; } 3>&2 \
        2>"$work/generator.time")
    echo "$out" | python3 -c 'import json,sys; r=json.load(sys.stdin); e=r["first_error"] or {}
print(round(r["requests_per_sec"]), round(r["latency_us"]["p99"]/1000, 3), sys.argv[1], r["errors"],
      " ".join(e.get("err", "").split()))' "$(generator_cpu "$3")"
}

start_redis redis-everysec $everysec_port everysec
start_redis redis-always $always_port always
start_resman
add_proxies

ratio() { python3 -c "print(f'{$1/$2:.2f}x')"; }
median() { python3 -c "import statistics,sys; print(f'{statistics.median(map(float, sys.argv[1:])):.2f}x')" "${@%x}"; }
row='%-7s %11s %8s %13s %8s %11s %8s %9s %9s\n'
printf "$row" "c,P" "resman rps" "p99 ms" "everysec rps" "p99 ms" "always rps" "p99 ms" "vs every" "vs always"
for setting in "${settings[@]}"; do
    read -r c p <<<"$setting"
    vs_every=(); vs_always=(); cpu_every=(); cpu_always=()
    for ((round = 1; round <= rounds; round++)); do
        # Assigned first, so that a failure stops the script (a failed `read <<<"$(...)"` would not).
        fill_redis $everysec_port $((requests + c * p + 10000))
        ticks=$(cpu_ticks redis-everysec)
        every=$(redis_lmove $everysec_port "$c" "$p" "$requests")
        every_cpu=$(cpu_per_request redis-everysec "$ticks" "$requests")
        fill_redis $always_port $((requests + c * p + 10000))
        ticks=$(cpu_ticks redis-always)
        always=$(redis_lmove $always_port "$c" "$p" "$requests")
        always_cpu=$(cpu_per_request redis-always "$ticks" "$requests")
        ticks=$(cpu_ticks resman)
        ours=$(resman_chain "$c" "$p" "$requests")
        ours_cpu=$(cpu_per_request resman "$ticks" "$requests")
        read -r every_rps every_p99 every_gen <<<"$every"
        read -r always_rps always_p99 always_gen <<<"$always"
        read -r ours_rps ours_p99 ours_gen ours_errors ours_first <<<"$ours"
        vs_every+=("$(ratio "$ours_rps" "$every_rps")")
        vs_always+=("$(ratio "$ours_rps" "$always_rps")")
        cpu_every+=("$(ratio "$ours_cpu" "$every_cpu")")
        cpu_always+=("$(ratio "$ours_cpu" "$always_cpu")")
        printf "$row" "$c,$p" "$ours_rps" "$ours_p99" "$every_rps" "$every_p99" "$always_rps" \
            "$always_p99" "${vs_every[-1]}" "${vs_always[-1]}"
        printf "$row" "  CPU" "${ours_cpu} us" "" "${every_cpu} us" "" "${always_cpu} us" "" \
            "${cpu_every[-1]}" "${cpu_always[-1]}"
        printf "$row" "  gen" "${ours_gen} us" "" "${every_gen} us" "" "${always_gen} us" "" "" ""
        [ "$ours_errors" = 0 ] || echo "  resman: $ours_errors error responses; the first: $ours_first"
    done
    if ((rounds > 1)); then
        printf "$row" "$c,$p" "median of" "$rounds" "rounds" "" "" "" \
            "$(median "${vs_every[@]}")" "$(median "${vs_always[@]}")"
        printf "$row" "  CPU" "" "" "" "" "" "" "$(median "${cpu_every[@]}")" \
            "$(median "${cpu_always[@]}")"
    fi
done
