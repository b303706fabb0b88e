#!/usr/bin/env bash
# Print every source plugin's quality figures, measured on the data in
# ../shared/data (EmoBank, FACS prototypes, BLE/HRV vectors) and on speech
# rendered with espeak-ng and sox:
#
#   ./scripts/plugin-quality.sh
#
#   text           Pearson r of valence and arousal on EmoBank's dev split
#   text-encoder   the same for the sentence-encoder text plugin
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
    if [ "$p" = text ]; then
        log "plugin text-encoder"
        scripts/fetch-text-model.sh >/dev/null
        cargo run --quiet --release -p emotion-plugin-text-encoder --example text_encoder_quality
    fi
done
