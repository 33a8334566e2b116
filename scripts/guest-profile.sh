#!/usr/bin/env bash
# Where the proxy-pool plugin's own code spends the host's instructions during durable
# getProxy → releaseProxy chains: the JIT code that callgrind shows only as `???:0x…` in the
# profile of scripts/instructions-per-request.sh, named after the compiled component's
# symbols (wasmtime names each function from the component's name section, so the plugin is
# built here unstripped, otherwise as scripts/build-plugins.sh builds it for release).
#   The host compiles the plugin once with a cache folder kept here, and the symbols of that
#   compiled file, shifted by where the measured host mapped its own copy, name the profile's
#   addresses. Costs are per request, as instructions-per-request counts them.
# Needs what instructions-per-request.sh needs, and nm and c++filt (Debian: binutils).
# Usage: scripts/guest-profile.sh [requests] [connections] [pipeline]
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
requests=${1:-20000}
port=46973

die() { echo "guest-profile: $*" >&2; exit 1; }
for tool in nm c++filt; do
    command -v "$tool" >/dev/null || die "$tool not found (Debian: apt install binutils)"
done
[[ "$requests" =~ ^[1-9][0-9]*$ ]] || die "usage: $0 [requests] [connections] [pipeline]"

rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
CARGO_TARGET_DIR=target/guest-profile cargo build --release --quiet --target wasm32-wasip2 \
    -p resman-plugin-proxy-pool --config profile.release.debug=false \
    --config profile.release.strip=false --config profile.release.lto=true \
    --config profile.release.codegen-units=1
plugin=target/guest-profile/wasm32-wasip2/release/resman_plugin_proxy_pool.wasm
cargo build --release -p resman --quiet
resman=target/release/resman

work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/guest-profile.XXXXXX")
pid=
cleanup() {
    [ -z "$pid" ] || kill "$pid" 2>/dev/null || true
    [ -z "$pid" ] || wait "$pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || die "port $port is in use"

# The compiled component, as the measured host will compile it.
mkdir -p "$work/plugins"
cp "$plugin" "$work/plugins/proxy-pool.wasm"
"$resman" serve --port $port --plugins "$work/plugins" --data-dir "$work/data" \
    --cache-dir "$work/cache" >"$work/host.log" 2>&1 &
pid=$!
for ((tries = 0; ; tries++)); do
    "$resman" call proxyStatus --addr 127.0.0.1:$port --timeout 1s >/dev/null 2>&1 && break
    if ! kill -0 "$pid" 2>/dev/null || ((tries > 300)); then
        tail -n 20 "$work/host.log" >&2
        die "the host did not come up (log above)"
    fi
    sleep 0.1
done
kill "$pid"
wait "$pid" 2>/dev/null || true
pid=
compiled=$(find "$work/cache" -name '*.cwasm' | head -n 1)
[ -n "$compiled" ] || die "the host left no compiled component in $work/cache"

RESMAN_PLUGIN=$plugin PROFILE_DIR=$work scripts/instructions-per-request.sh "$@"

callgrind_annotate --threshold=100 --auto=no "$work/callgrind.out" >"$work/functions.txt"
nm -n --demangle "$compiled" >"$work/symbols.txt"
python3 - "$work/functions.txt" "$work/symbols.txt" "$requests" <<'PY'
import bisect, collections, re, subprocess, sys
functions, symbols, requests = sys.argv[1], sys.argv[2], int(sys.argv[3])
starts = []  # (address in the compiled file, name)
for line in open(symbols):
    parts = line.rstrip("\n").split(" ", 2)
    if len(parts) == 3 and parts[1] in "tT":
        starts.append((int(parts[0], 16), parts[2]))
names = dict(starts)
costs = []  # (instructions, address) of the code callgrind could not name
for line in open(functions):
    m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+\?\?\?:0x([0-9a-f]+)", line)
    if m:
        costs.append((int(m.group(1).replace(",", "")), int(m.group(2), 16)))
if not costs or not starts:
    sys.exit("guest-profile: no JIT code in the profile, or no symbols in the compiled file")
# The base the measured host mapped the code at: the shift that puts the most of the
# profile's function addresses exactly on symbol starts.
hits, base = max(
    (sum((a - (address - start)) in names for _, a in costs), address - start)
    for _, address in costs[:5] for start, _ in starts
)
print(f"{hits} of {len(costs)} JIT functions matched the compiled component's symbols")
addresses = [a for a, _ in starts]
named = collections.Counter()
for cost, address in costs:
    at = bisect.bisect_right(addresses, address - base) - 1
    named[starts[at][1] if at >= 0 else "?"] += cost
print(f"{sum(named.values()) / requests:.0f} instructions per request in JIT code:")
top = named.most_common(30)
# "wasm[0]::function[42]::_ZN…": the Rust name after the function's index, demangled.
split = [re.match(r"(wasm\[\d+\]::function\[\d+\]::)?(.*)", name).groups() for name, _ in top]
plain = subprocess.run(["c++filt"], input="\n".join(rest for _, rest in split), text=True,
                       capture_output=True).stdout.splitlines()
for (_, cost), (index, _), name in zip(top, split, plain):
    print(f"{cost / requests:7.0f}  {(index or '') + name}"[:150])
PY
