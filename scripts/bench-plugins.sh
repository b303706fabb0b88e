#!/usr/bin/env bash
# Readings per second of each source plugin through the plugin host (batch
# 100), against the same code compiled natively, and the voice plugin's
# real-time factor. Each bench is a small workspace of its own (it links
# wasmtime, which the plugins themselves must not), so the first build is slow.
#
#   ./scripts/bench-plugins.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_rust
./scripts/build-plugins.sh
target="${CARGO_TARGET_DIR:-$PWD/target}"
for p in text physiological voice; do
    log "plugin host bench: plugins/$p/host-bench"
    cargo run --quiet --release --manifest-path "plugins/$p/host-bench/Cargo.toml" \
        --target-dir "$target/host-bench" -- "$target/plugins"
done
