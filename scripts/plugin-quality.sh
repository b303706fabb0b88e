#!/usr/bin/env bash
# Print every source plugin's quality figures, measured on the data in
# ../shared/data (EmoBank, FACS prototypes, BLE/HRV vectors) and on speech
# rendered with espeak-ng and sox:
#
#   ./scripts/plugin-quality.sh
#
#   text           Pearson r of valence and arousal on EmoBank's dev split
#   facial         accuracy on every FACS prototype, and on near-misses
#   voice          ranking agreement of excited over calm renderings
#   physiological  the HRV example exactly, SCR detection, calm/stress/recovery order
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_rust
ensure_apt espeak-ng sox
for p in text facial voice physiological; do
    log "plugin $p"
    cargo run --quiet --release -p "emotion-plugin-$p" --example "${p}_quality"
done
