#!/usr/bin/env bash
# resman `ping` against Redis `PING` (ping_mbulk) at the same connections and pipeline, in one
# run, printed as ratios. Needs redis-server and redis-benchmark (Debian: redis-server).
# Usage: scripts/bench-vs-redis.sh [requests-per-setting]   (RESMAN_THREADS=n sets serve --threads)
set -euo pipefail
cd "$(dirname "$0")/.."
requests=${1:-1000000}
cargo build --release -p resman --quiet
resman=target/release/resman
rport=46379; mport=46969
redis-server --port $rport --save '' --appendonly no --daemonize no >/dev/null &
redis_pid=$!
$resman serve --port $mport --in-memory ${RESMAN_THREADS:+--threads $RESMAN_THREADS} >/dev/null 2>&1 &
resman_pid=$!
trap 'kill $redis_pid $resman_pid 2>/dev/null' EXIT
until redis-cli -p $rport ping >/dev/null 2>&1; do sleep 0.1; done
until $resman call ping --addr 127.0.0.1:$mport >/dev/null 2>&1; do sleep 0.1; done

printf '%-10s %12s %10s %12s %10s %8s\n' "c,P" "resman rps" "p99 ms" "redis rps" "p99 ms" "ratio"
for setting in "1 1" "50 1" "50 16"; do
    set -- $setting
    n=$requests; [ "$1" = 1 ] && n=$((requests / 10))
    out=$(redis-benchmark -p $rport -t ping_mbulk -c "$1" -P "$2" -n "$n" --csv -q 2>/dev/null | tail -1)
    # "PING_MBULK","rps","avg","min","p50","p95","p99","max"
    redis_rps=$(echo "$out" | cut -d, -f2 | tr -d '"')
    redis_p99=$(echo "$out" | cut -d, -f7 | tr -d '"')
    json=$($resman bench --addr 127.0.0.1:$mport -c "$1" -P "$2" -n "$n" --json)
    ours_rps=$(echo "$json" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["requests_per_sec"]))')
    ours_p99=$(echo "$json" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["latency_us"]["p99"]/1000, 3))')
    ratio=$(python3 -c "print(f'{$ours_rps/$redis_rps:.2f}x')")
    printf '%-10s %12s %10s %12s %10s %8s\n' "$1,$2" "$ours_rps" "$ours_p99" "$redis_rps" "$redis_p99" "$ratio"
done
