#!/usr/bin/env bash
# Built-in `ping` vs `cntResponse` through the WASM counter vs through the native counter, at
# the same connections and pipeline, in one run, as ratios to ping. Then the time from a
# plugin file landing in the folder to its type being served, cold and from the cache.
# The three are measured in turn, ROUNDS times (default 3), and each figure is the median of
# its rounds, so that a noisy moment on a shared machine skews one round, not the ratio.
# Usage: scripts/bench-plugins.sh [connections] [pipeline] [duration]
set -euo pipefail
cd "$(dirname "$0")/.."
c=${1:-50}; p=${2:-16}; d=${3:-5s}; rounds=${ROUNDS:-3}
cargo build --release -p resman --quiet
./scripts/build-plugins.sh release >/dev/null
resman=target/release/resman
plugins=target/plugins/release
work=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT

rps() { $resman bench --addr "127.0.0.1:$1" -c "$c" -P "$p" -d "$d" -t "$2" --json |
    python3 -c 'import json,sys; r=json.load(sys.stdin); print(round(r["requests_per_sec"]), r["latency_us"]["p99"], r["errors"])'; }

serve_with() { # port, plugin file
    mkdir -p "$work/$1"; cp "$plugins/$2" "$work/$1/"
    $resman serve --port "$1" --plugins "$work/$1" --cache-dir "$work/cache-$1" --in-memory >"$work/$1.log" 2>&1 &
    local pid=$! tries=0
    until $resman call cntResponse --addr "127.0.0.1:$1" >/dev/null 2>&1; do
        kill -0 $pid 2>/dev/null && [ $((tries += 1)) -lt 600 ] || { cat "$work/$1.log" >&2; exit 1; }
        sleep 0.05
    done
}
serve_with 48101 counter.wasm
serve_with 48102 counter.so
for ((round = 0; round < rounds; round++)); do
    rps 48101 ping >>"$work/ping"
    rps 48101 cntResponse >>"$work/wasm"
    rps 48102 cntResponse >>"$work/native"
done
median() { # file of "rps p99 errors" lines → the line of the median rps, errors summed
    python3 - "$1" <<'PY'
import sys
rows = [line.split() for line in open(sys.argv[1])]
rows.sort(key=lambda row: float(row[0]))
rps, p99, _ = rows[len(rows) // 2]
print(rps, p99, sum(int(row[2]) for row in rows))
PY
}
read -r ping ping99 _ <<<"$(median "$work/ping")"
read -r wasm wasm99 wasm_err <<<"$(median "$work/wasm")"
read -r native native99 native_err <<<"$(median "$work/native")"
echo "median of $rounds rounds of $d each"
printf '%-22s %10s %9s %7s\n' "at c=$c P=$p" "req/s" "p99 us" "vs ping"
printf '%-22s %10s %9s %7s\n' "ping (built-in)" "$ping" "$ping99" "1.00"
printf '%-22s %10s %9s %7s\n' "cntResponse (wasm)" "$wasm" "$wasm99" "$(python3 -c "print(f'{$wasm/$ping:.2f}')")"
printf '%-22s %10s %9s %7s\n' "cntResponse (native)" "$native" "$native99" "$(python3 -c "print(f'{$native/$ping:.2f}')")"
[ "$wasm_err$native_err" = "00" ] || echo "error responses: wasm $wasm_err, native $native_err"

# Landing → served: a fresh folder and cache, the file renamed in, polled until served.
landing() { # port, plugin file, cache dir → milliseconds
    python3 - "$resman" "$1" "$plugins/$2" "$work/land-$1" "$3" <<'PY'
import os, shutil, socket, subprocess, sys, time
resman, port, src, folder, cache = sys.argv[1:]
os.makedirs(folder, exist_ok=True)
proc = subprocess.Popen([resman, "serve", "--port", port, "--plugins", folder, "--cache-dir", cache, "--in-memory"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
crab = "🦀".encode()
def ask(s, i):
    s.sendall(b'{"type":"cntResponse","queryIndex":%d}' % i + crab)
    data = b""
    while not data.endswith(crab):
        data += s.recv(4096)
    return b"unknown_type" not in data
for _ in range(400):
    try:
        s = socket.create_connection(("127.0.0.1", int(port))); break
    except OSError:
        time.sleep(0.02)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
shutil.copy(src, os.path.join(folder, ".staged"))
start = time.monotonic()
os.rename(os.path.join(folder, ".staged"), os.path.join(folder, os.path.basename(src)))
i = 0
while not ask(s, i):
    i += 1
    if time.monotonic() - start > 30:
        sys.exit("the plugin was not served within 30 s")
print(f"{(time.monotonic() - start) * 1000:.0f}")
proc.terminate(); proc.wait()
PY
}
cold=$(landing 48103 counter.wasm "$work/cache")
warm=$(rm -rf "$work/land-48104"; landing 48104 counter.wasm "$work/cache")
native_land=$(landing 48105 counter.so "$work/cache2")
echo "landing -> served: wasm cold ${cold} ms, wasm cached ${warm} ms, native ${native_land} ms (renamed into the folder)"
