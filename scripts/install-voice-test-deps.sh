#!/usr/bin/env bash
# Installs what the voice plugin's speech tests and quality report need:
# espeak-ng (renders the test sentences, calm and excited, from SSML) and sox
# (converts its output to 16 kHz mono signed 16-bit PCM). Debian/Ubuntu.
#
#   scripts/install-voice-test-deps.sh
#
# The tests never install anything themselves: without these tools they fail
# and name this script. Safe to run again: it installs only what is missing.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

need=()
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
command -v sox >/dev/null 2>&1 || need+=(sox)

if [ ${#need[@]} -eq 0 ]; then
    echo "install-voice-test-deps: espeak-ng and sox already present"
    exit 0
fi

echo "install-voice-test-deps: installing ${need[*]}"
apt_install "${need[@]}"
