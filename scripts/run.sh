#!/usr/bin/env bash
# Set up and run the gateway on its embedded defaults, with simulated devices
# feeding it, so a newcomer sees it work:
#
#   ./scripts/run.sh             # gateway + firmware-sim devices; Ctrl-C stops all
#   ./scripts/run.sh --no-sim    # the gateway alone
#
# The API and dashboard listen on 127.0.0.1:8080 (EMOTION_GATEWAY__HTTP__LISTEN
# overrides it); data goes to ./data; the plugins built into target/plugins
# are loaded. The simulated devices: a heart-rate strap and an EDA band on
# serial ptys, the in-process simulated BLE strap (paired at start; it plays
# calm -> stress -> recovery, a pass a minute, and its link drops every 100 s
# for 5 s, so the reconnect and the gap marker show), and WebSocket clients
# playing the original producer's scenarios in a loop.
# Every step installs what a fresh machine lacks.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

sim=1
if [ "${1:-}" = "--no-sim" ]; then
    sim=0
    shift
fi

ensure_rust
# The gateway builds the real Bluetooth transport (btleplug needs libdbus)
# and jemalloc (its C build runs make).
ensure_apt libdbus-1-dev pkg-config make
./scripts/build-plugins.sh
cargo build --release -p emotion-gateway -p emotion-firmware-sim

if [ "$sim" = 0 ]; then
    exec ./target/release/emotion-gateway "$@"
fi

token="${EMOTION_GATEWAY_DEMO_TOKEN:-dev-token-change-me}"
run_dir="$(mktemp -d -t emotion-demo-XXXXXX)"
pids=()
cleanup() {
    # The looping subshells first (so they start nothing new), then what they
    # were running.
    local kids=()
    for p in "${pids[@]}"; do
        kids+=($(pgrep -P "$p" 2>/dev/null || true))
        kill "$p" 2>/dev/null || true
    done
    for p in "${kids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$run_dir"
}
trap cleanup EXIT INT TERM

# 1. Serial wearables on ptys (stable symlinks in $run_dir/dev), looping.
(
    while true; do
        ./target/release/firmware-sim serial --quiet --link-dir "$run_dir/dev" \
            --journey calm-stress-recovery --speed 10 --duration 1800 || sleep 1
    done
) &
pids+=($!)
for _ in $(seq 100); do [ -e "$run_dir/dev/strap" ] && break; sleep 0.1; done

# 2. The gateway: embedded defaults, plus the simulated serial ports and BLE
#    adapter. Its address line tells us where it listens.
export EMOTION_GATEWAY__SERIAL="[{path = \"$run_dir/dev/strap\", device_id = \"sim-strap\", user_id = \"serial-user\"}, {path = \"$run_dir/dev/band\", device_id = \"sim-band\", user_id = \"serial-user\"}]"
export EMOTION_GATEWAY__BLE__ADAPTER=simulated
# The BLE strap's wearer: 10 simulated minutes of calm -> stress -> recovery
# per real minute, and a link drop every 100 s (5 s out of reach), which the
# gateway reconnects and records as a gap marker (GET /api/devices).
export EMOTION_GATEWAY__BLE__SIMULATED__JOURNEY=calm-stress-recovery
export EMOTION_GATEWAY__BLE__SIMULATED__SPEED=10
export EMOTION_GATEWAY__BLE__SIMULATED__LINK_DROP_EVERY=100s
export EMOTION_GATEWAY__BLE__SIMULATED__LINK_DOWN_FOR=5s
# MQTT devices: the development device (bound to user 42, for mosquitto_pub by
# hand) and firmware-sim's hub, which speaks for the simulated cameras, voice
# front ends and chat apps.
mqtt_hub_token="sim-hub-token-change-me"
export EMOTION_GATEWAY__MQTT__DEVICES="[{device_id = \"dev-device\", token = \"dev-device-token-change-me\", user_id = \"42\"}, {device_id = \"sim-hub\", token = \"$mqtt_hub_token\"}]"
./target/release/emotion-gateway "$@" > >(tee "$run_dir/gateway.out") &
gw=$!
pids+=($gw)
addr=""
for _ in $(seq 300); do
    addr="$(sed -n 's/^emotion-gateway listening on http:\/\///p' "$run_dir/gateway.out" 2>/dev/null | head -1)"
    [ -n "$addr" ] && break
    kill -0 "$gw" 2>/dev/null || { echo "the gateway exited" >&2; exit 1; }
    sleep 0.1
done
[ -n "$addr" ] || { echo "the gateway did not start" >&2; exit 1; }

# 3. Pair the simulated BLE strap with a user (admin API).
curl -fsS -X POST "http://$addr/api/ble/pair" -H "Authorization: Bearer $token" \
    -H 'content-type: application/json' \
    -d '{"address": "E0:00:00:00:B1:01", "user_id": "ble-user"}' >/dev/null \
    && log "paired the simulated BLE strap E0:00:00:00:B1:01 with user ble-user (calm -> stress -> recovery; link drops every 100 s)"

# 4. WebSocket clients playing the original scenarios, and beside each user an
#    MQTT device on the embedded broker, looping: MQTT 5 (firmware-sim's
#    default, refusals come back as PUBACK reason codes) on its MQTT 5
#    address from /api/mqtt, or MQTT 3.1.1 if only that listener is on.
mqtt_status="$(curl -fsS -H "Authorization: Bearer $token" "http://$addr/api/mqtt")" || true
listener() {
    printf '%s' "$mqtt_status" | grep -o "\"addr\":\"[^\"]*\",\"key\":\"mqtt.$1\"" \
        | sed 's/"addr":"\([^"]*\)".*/\1/'
}
mqtt_addr="$(listener listen_v5)" mqtt_version=5
[ -n "$mqtt_addr" ] || { mqtt_addr="$(listener listen_v4)"; mqtt_version=3.1.1; }
mqtt_args=()
if [ -n "$mqtt_addr" ]; then
    mqtt_args=(--mqtt "mqtt://$mqtt_addr" --mqtt-version "$mqtt_version"
        --mqtt-username sim-hub --mqtt-password "$mqtt_hub_token")
    log "MQTT devices publish to the embedded broker on $mqtt_addr (MQTT $mqtt_version)"
fi
(
    while kill -0 "$gw" 2>/dev/null; do
        ./target/release/firmware-sim all --quiet --speed 20 --gateway "http://$addr" --token "$token" \
            "${mqtt_args[@]}" || sleep 2
    done
) &
pids+=($!)

log "gateway on http://$addr — try:"
log "  curl -H 'x-auth-token: $token' http://$addr/health"
log "  curl -H 'x-auth-token: $token' http://$addr/api/users/1/summary"
log "  curl -H 'x-auth-token: $token' http://$addr/api/devices        # BLE link, gap markers"
log "  curl -H 'x-auth-token: $token' http://$addr/api/users/ble-user/summary   # the BLE strap's wearer"
log "  curl -X POST -H 'x-auth-token: $token' http://$addr/api/ble/devices/E0:00:00:00:B1:01/drop   # drop the strap's link now"
log "  curl -H 'x-auth-token: $token' http://$addr/api/mqtt"
log "  open http://$addr/ (dashboard; sign in with $token)"
log "Ctrl-C stops everything."
wait "$gw"
