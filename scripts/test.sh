#!/usr/bin/env bash
# Run every test of the workspace, installing what a fresh machine lacks.
#
#   ./scripts/test.sh
#
# End-to-end tests start the real binaries, so they are built first.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_rust
python3 scripts/check-module-cycles.py
# The gateway builds the real Bluetooth transport (btleplug needs libdbus);
# the voice plugin's tests render speech with espeak-ng and sox; the MQTT
# tests talk to the embedded broker with Mosquitto's clients and start private
# Mosquitto brokers; the dashboard test drives Debian's chromium.
ensure_apt libdbus-1-dev pkg-config make espeak-ng sox
./scripts/install-mqtt-test-deps.sh
./scripts/install-browser-test-deps.sh
log "building the WebAssembly plugins (installs the wasm target if missing)"
./scripts/build-plugins.sh
log "building the binaries the end-to-end tests start"
cargo build --workspace --bins
log "running the tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast
    # nextest does not run doc tests.
    cargo test --workspace --doc
else
    cargo test --workspace --no-fail-fast
fi
log "the gateway without its default features (no MQTT, no Bluetooth radio)"
cargo test -p emotion-gateway --no-default-features --lib
