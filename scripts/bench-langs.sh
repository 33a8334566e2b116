#!/usr/bin/env bash
# Jobbers by language, release builds: requests per second of one request type at the same
# connections and pipeline for the Rust WASM counter (cntResponse), the Python
# ticket-price jobber (ticketPrice.quote) and the JavaScript booking jobber (booking.check),
# with ratios to the Rust one; then each component's load time compiled cold and taken from
# the compiled cache at a restart, as the host reports it (srvPlugins `loadMs`), and the
# restart's time from process start to the type being served.
# Usage: scripts/bench-langs.sh [connections] [pipeline] [duration]
set -euo pipefail
cd "$(dirname "$0")/.."
c=${1:-50}; p=${2:-16}; d=${3:-5s}
cargo build --release -p resman --quiet
./scripts/build-plugins.sh release >/dev/null
./scripts/build-guest-langs.sh release >/dev/null
resman=target/release/resman
plugins="${CARGO_TARGET_DIR:-target}/plugins/release"
work=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT

langs=(rust python javascript)
spec() { # language → file, kind, payload
    case "$1" in
        rust) file=counter.wasm kind=cntResponse payload=null ;;
        python) file=ticket-price.wasm kind=ticketPrice.quote
            payload='{"show":"hamlet","row":"F","time":"19:30"}' ;;
        javascript) file=booking.wasm kind=booking.check
            payload='{"show":" The Tempest ","date":"2026-12-05","seats":"b3, B 4","name":" Ada  Lovelace ","email":"Ada@Example.com"}' ;;
    esac
}

serve() { # port, folder, cache; sets pid (not in a subshell, so the EXIT trap sees the job)
    $resman serve --port "$1" --plugins "$2" --cache-dir "$3" --in-memory >>"$work/$1.log" 2>&1 &
    pid=$!
}

wait_served() { # port, pid, type, payload
    local tries=0
    until $resman call "$3" "$4" --addr "127.0.0.1:$1" >/dev/null 2>&1; do
        kill -0 "$2" 2>/dev/null && [ $((tries += 1)) -lt 1200 ] || { cat "$work/$1.log" >&2; exit 1; }
        sleep 0.05
    done
}

stop() { kill "$1"; wait "$1" 2>/dev/null || true; }

# loadMs and fromCache of the one plugin a host on `port` serves.
load_ms() {
    $resman plugins --json --addr "127.0.0.1:$1" |
        python3 -c 'import json,sys; p=json.load(sys.stdin)["plugins"][0]; print(round(p["loadMs"]), p["fromCache"])'
}

rps() { # port, type, payload
    $resman bench --addr "127.0.0.1:$1" -c "$c" -P "$p" -d "$d" -t "$2" --payload "$3" --json |
        python3 -c 'import json,sys; r=json.load(sys.stdin); print(round(r["requests_per_sec"]), round(r["latency_us"]["p99"]), r["errors"])'
}

port=48460
declare -A req p99 errs cold warm restart
for lang in "${langs[@]}"; do
    spec "$lang"
    port=$((port + 1)); folder="$work/$lang"; cache="$work/cache-$lang"
    mkdir -p "$folder"; cp "$plugins/$file" "$folder/"

    serve "$port" "$folder" "$cache"; wait_served "$port" "$pid" "$kind" "$payload"
    read -r ms from_cache <<<"$(load_ms "$port")"
    [ "$from_cache" = False ] || { echo "$file: the first load came from a cache" >&2; exit 1; }
    cold[$lang]=$ms
    read -r req[$lang] p99[$lang] errs[$lang] <<<"$(rps "$port" "$kind" "$payload")"
    stop "$pid"

    start=$(date +%s%N)
    serve "$port" "$folder" "$cache"; wait_served "$port" "$pid" "$kind" "$payload"
    restart[$lang]=$((($(date +%s%N) - start) / 1000000))
    read -r ms from_cache <<<"$(load_ms "$port")"
    [ "$from_cache" = True ] || { echo "$file: the restart compiled it again" >&2; exit 1; }
    warm[$lang]=$ms
    stop "$pid"
done

ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
printf '%-34s %9s %9s %9s %8s\n' "one type at c=$c P=$p, $d" "req/s" "us/req" "p99 us" "vs Rust"
for lang in "${langs[@]}"; do
    spec "$lang"
    printf '%-34s %9s %9s %9s %8s\n' "$lang: $kind" "${req[$lang]}" \
        "$(python3 -c "print(f'{1e6/${req[$lang]}:.1f}')")" "${p99[$lang]}" "$(ratio "${req[$lang]}" "${req[rust]}")"
    [ "${errs[$lang]}" = 0 ] || echo "  ${errs[$lang]} error responses"
done
echo
printf '%-34s %9s %12s %16s %8s\n' "load (srvPlugins loadMs)" "size MB" "cold ms" "cached ms" "restart"
for lang in "${langs[@]}"; do
    spec "$lang"
    size=$(python3 -c "import os; print(f'{os.path.getsize(\"$plugins/$file\")/1e6:.1f}')")
    printf '%-34s %9s %12s %16s %6s ms\n' "$lang: $file" "$size" "${cold[$lang]}" \
        "${warm[$lang]}" "${restart[$lang]}"
done
echo "(restart: process start to the first answer of the type, compiled cache warm)"
