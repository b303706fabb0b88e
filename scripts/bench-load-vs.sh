#!/usr/bin/env bash
# Two gateway binaries under the same load tool (firmware-sim load), rounds
# alternating between them: acknowledged events/s and the gateway's CPU per
# acknowledged event, over WebSocket (32 connections x depth 32) and MQTT 5
# QoS 1 (32 devices x depth 32, embedded broker), each with its ratio.
#
#   scripts/bench-load-vs.sh BASE_BIN CURRENT_BIN [ROUNDS] [SECONDS]
#   DEPTH=64 scripts/bench-load-vs.sh …     # another pipeline depth (default 32)
#   RATE=10000 scripts/bench-load-vs.sh …   # WebSocket open loop at RATE events/s
#                                           # over 32 connections: the latency at a rate
#
# Each run prints events/s, CPU-µs per event and the ack latency p50 / p99
# (open loop: from when each event was due); the summary gives the medians
# and their ratios.
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
depth=${DEPTH:-32}
rate=${RATE:-}
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

# run BIN TRANSPORT: prints "events_per_s cpu_us_per_event p50_ms p99_ms"
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
    local args=(--gateway "ws://127.0.0.1:$http" --connections 32 --warmup 2 --duration "$seconds" --json --gateway-pid "$gw")
    if [ -n "$rate" ]; then
        args+=(--rate "$rate")
    else
        args+=(--depth "$depth")
    fi
    if [ "$transport" = mqtt ]; then
        args+=(--transport mqtt --mqtt-username 'd{i}' --mqtt-password 'load-device-token-{i}' --mqtt-user 'mu{i}')
    fi
    "$sim" load "${args[@]}" 2> "$scratch/load.err" | python3 -c '
import json, sys
r = json.load(sys.stdin)
l = r["latency"]
print("%.0f %.2f %.3f %.3f" % (r["acknowledged_per_s"], r["gateway"]["cpu_s_per_1000_events"] * 1000, l["p50_ms"], l["p99_ms"]))'
    kill "$gw"
    wait "$gw" 2> /dev/null || true
    gw=
}

transports="ws mqtt"
if [ -n "$rate" ]; then transports=ws; fi
for transport in $transports; do
    declare -a be=() bc=() b50=() b99=() ce=() cc=() c50=() c99=()
    for r in $(seq 1 "$rounds"); do
        read -r e c p50 p99 < <(run "$base" "$transport")
        be+=("$e"); bc+=("$c"); b50+=("$p50"); b99+=("$p99")
        read -r e c p50 p99 < <(run "$current" "$transport")
        ce+=("$e"); cc+=("$c"); c50+=("$p50"); c99+=("$p99")
        echo "$transport round $r: base ${be[-1]} events/s ${bc[-1]} CPU-us/event p50/p99 ${b50[-1]}/${b99[-1]} ms," \
            "current ${ce[-1]} events/s ${cc[-1]} CPU-us/event p50/p99 ${c50[-1]}/${c99[-1]} ms"
    done
    python3 - "$transport" "${be[*]}" "${bc[*]}" "${ce[*]}" "${cc[*]}" "${b50[*]}" "${b99[*]}" "${c50[*]}" "${c99[*]}" <<'PY'
import statistics as st, sys
t = sys.argv[1]
be, bc, ce, cc, b50, b99, c50, c99 = ([float(x) for x in a.split()] for a in sys.argv[2:10])
m = st.median
print(f"{t} median: events/s base {m(be):.0f}, current {m(ce):.0f}, ratio {m(ce) / m(be):.2f}; "
      f"gateway CPU per event base {m(bc):.2f} us, current {m(cc):.2f} us, ratio {m(cc) / m(bc):.2f} (lower is better); "
      f"ack p50 base {m(b50):.2f} ms, current {m(c50):.2f} ms; p99 base {m(b99):.2f} ms, current {m(c99):.2f} ms")
PY
done
