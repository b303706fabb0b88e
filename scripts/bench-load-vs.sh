#!/usr/bin/env bash
# Two gateway binaries under the same load tool (firmware-sim load), rounds
# alternating between them: acknowledged events/s and the gateway's CPU per
# acknowledged event, over WebSocket (32 connections x depth 32) and MQTT 5
# QoS 1 (32 devices x depth 32, embedded broker), each with its ratio.
#
#   scripts/bench-load-vs.sh BASE_BIN CURRENT_BIN [ROUNDS] [SECONDS]
#
# CPU per event is the figure to trust on a busy machine: events/s follows
# whatever CPU other processes leave, CPU-s per event much less so.
# scripts/bench-ingest-vs.sh builds both binaries from two commits and calls
# this script after its own rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_rust
ensure_apt curl python3
base=$(realpath "$1")
current=$(realpath "$2")
rounds=${3:-3}
seconds=${4:-8}
sim=target/release/firmware-sim
[ -x "$sim" ] || cargo build --release -q -p emotion-firmware-sim
scratch=$(mktemp -d)
gw=
trap 'if [ -n "$gw" ]; then kill "$gw" 2>/dev/null || true; fi; rm -rf "$scratch"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# One gateway configuration: 32 devices d0..d31 bound to users mu0..mu31,
# no per-device rate limit (the load tool measures the gateway, not the limit).
config() {
    cat <<EOF
[http]
listen = "127.0.0.1:$1"
[storage]
path = "$scratch/data"
[mqtt]
listen_v4 = ""
listen_v5 = "127.0.0.1:$2"
[mqtt.limits]
device_rate_per_second = 0.0
EOF
    for i in $(seq 0 31); do
        printf '[[mqtt.devices]]\ndevice_id = "d%s"\ntoken = "load-device-token-%s"\nuser_id = "mu%s"\n' "$i" "$i" "$i"
    done
}

# run BIN TRANSPORT: prints "events_per_s cpu_us_per_event"
run() {
    local bin=$1 transport=$2 http mqtt
    http=$(free_port)
    mqtt=$(free_port)
    rm -rf "$scratch/data"
    config "$http" "$mqtt" > "$scratch/gateway.toml"
    "$bin" --config "$scratch/gateway.toml" > "$scratch/gateway.log" 2>&1 &
    gw=$!
    for _ in $(seq 1 200); do
        curl -sf "http://127.0.0.1:$http/health" > /dev/null && break
        sleep 0.05
    done
    local args=(--gateway "ws://127.0.0.1:$http" --connections 32 --depth 32 --warmup 2 --duration "$seconds" --json --gateway-pid "$gw")
    if [ "$transport" = mqtt ]; then
        args+=(--transport mqtt --mqtt-username 'd{i}' --mqtt-password 'load-device-token-{i}' --mqtt-user 'mu{i}')
    fi
    "$sim" load "${args[@]}" 2> "$scratch/load.err" | python3 -c '
import json, sys
r = json.load(sys.stdin)
print("%.0f %.2f" % (r["acknowledged_per_s"], r["gateway"]["cpu_s_per_1000_events"] * 1000))'
    kill "$gw"
    wait "$gw" 2> /dev/null || true
    gw=
}

for transport in ws mqtt; do
    declare -a be=() bc=() ce=() cc=()
    for r in $(seq 1 "$rounds"); do
        read -r e c < <(run "$base" "$transport")
        be+=("$e"); bc+=("$c")
        read -r e c < <(run "$current" "$transport")
        ce+=("$e"); cc+=("$c")
        echo "$transport round $r: base ${be[-1]} events/s ${bc[-1]} CPU-us/event, current ${ce[-1]} events/s ${cc[-1]} CPU-us/event"
    done
    python3 - "$transport" "${be[*]}" "${bc[*]}" "${ce[*]}" "${cc[*]}" <<'PY'
import statistics as st, sys
t = sys.argv[1]
be, bc, ce, cc = ([float(x) for x in a.split()] for a in sys.argv[2:6])
print(f"{t} median: events/s base {st.median(be):.0f}, current {st.median(ce):.0f}, ratio {st.median(ce) / st.median(be):.2f}; "
      f"gateway CPU per event base {st.median(bc):.2f} us, current {st.median(cc):.2f} us, ratio {st.median(cc) / st.median(bc):.2f} (lower is better)")
PY
done
