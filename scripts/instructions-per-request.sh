#!/usr/bin/env bash
# The host's user-space instructions per request (callgrind's Ir) during durable getProxy →
# releaseProxy chains through the proxy-pool WASM plugin: a count, not a time, so it does not
# move with a shared machine's load, and a change of 1% shows. Run it before and after a
# change to the request path. Kernel work (system calls, TCP, fsync) is not counted: system
# calls per request are for `perf stat`.
#   The host runs under valgrind, one thread at a time and some 50 times slower, so batches
#   and commits group differently than at full speed: compare counts of this script with each
#   other, not with CPU times. A warm-up run fills the caches first; the counters are zeroed
#   after it and read after the measured run.
# Needs valgrind (Debian: valgrind) and python3.
# Usage: scripts/instructions-per-request.sh [requests] [connections] [pipeline]
#   RESMAN_BIN=path measures another build of the host (default: this tree's release build),
#   RESMAN_PLUGIN=path another build of the proxy-pool component (with both given, nothing is
#   built: builds kept aside are compared while the tree changes);
#   BENCH_DIR=folder holds the data files (default /var/tmp); PROFILE_DIR=folder keeps the
#   measured run's callgrind profile there as callgrind.out, for `callgrind_annotate`.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
requests=${1:-20000}
connections=${2:-50}
pipeline=${3:-16}
port=46972
proxies=2000

die() { echo "instructions-per-request: $*" >&2; exit 1; }
for n in "$requests" "$connections" "$pipeline"; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "usage: $0 [requests] [connections] [pipeline]"
done
for tool in valgrind callgrind_control python3; do
    command -v "$tool" >/dev/null || die "$tool not found (Debian: apt install valgrind)"
done

if [ -z "${RESMAN_BIN:-}" ] || [ -z "${RESMAN_PLUGIN:-}" ]; then
    cargo build --release -p resman --quiet
    ./scripts/build-plugins.sh release >/dev/null
fi
resman=target/release/resman
host=${RESMAN_BIN:-$resman}
plugin=${RESMAN_PLUGIN:-target/plugins/release/proxy-pool.wasm}

work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/instructions.XXXXXX")
pid=
cleanup() {
    [ -z "$pid" ] || kill "$pid" 2>/dev/null || true
    [ -z "$pid" ] || wait "$pid" 2>/dev/null || true
    if [ -n "${PROFILE_DIR:-}" ] && [ -f "$work/profile" ]; then
        mkdir -p "$PROFILE_DIR" && cp "$(cat "$work/profile")" "$PROFILE_DIR/callgrind.out"
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || die "port $port is in use"

mkdir -p "$work/plugins"
cp "$plugin" "$work/plugins/"
valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" \
    "$host" serve --port $port --plugins "$work/plugins" --data-dir "$work/data" \
    --cache-dir "$work/cache" >"$work/host.log" 2>&1 &
pid=$!
for ((tries = 0; ; tries++)); do
    $resman call proxyStatus --addr 127.0.0.1:$port --timeout 5s >/dev/null 2>&1 && break
    if ! kill -0 "$pid" 2>/dev/null || ((tries > 600)); then
        tail -n 20 "$work/host.log" >&2
        die "the host did not come up under valgrind (log above)"
    fi
    sleep 0.2
done
for ((from = 0; from < proxies; from += 500)); do
    $resman call addProxy --addr 127.0.0.1:$port --timeout 60s "$(python3 -c "
import json, sys
start = int(sys.argv[1])
print(json.dumps({'proxies': [f'10.0.{i >> 8}.{i & 255}:3128' for i in range(start, start + 500)]}))" "$from")" \
        >/dev/null || die "addProxy failed"
done

chain() { # requests → the bench's JSON report
    $resman bench --addr 127.0.0.1:$port -c "$connections" -P "$pipeline" -n "$1" --json \
        --step getProxy='{}' --step 'releaseProxy={"lease":{{lease}}}'
}
chain 2000 >/dev/null
callgrind_control --zero "$pid" >/dev/null 2>&1
report=$(chain "$requests")
callgrind_control --dump "$pid" >/dev/null 2>&1

python3 - "$work" "$requests" "$report" <<'PY'
import glob, json, re, sys
work, requests, report = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
if report["errors"]:
    sys.exit(f"instructions-per-request: {report['errors']} error responses; the count is void")
counts = []
for path in glob.glob(work + "/callgrind.out*"):
    text = open(path).read()
    if "Trigger: dump" in text:  # the measured run, not the program's exit
        counts.append(int(re.search(r"^summary: (\d+)", text, re.M).group(1)))
        open(work + "/profile", "w").write(path)
if len(counts) != 1:
    sys.exit(f"instructions-per-request: expected one dump, found {len(counts)}")
print(f"{counts[0] / requests:.0f} instructions per request "
      f"({counts[0]} over {requests} requests)")
PY
