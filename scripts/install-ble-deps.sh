#!/usr/bin/env bash
# Installs what the real BLE transport (emotion-ble's `btleplug` feature) needs
# to build on Debian/Ubuntu: btleplug talks to BlueZ over D-Bus, and its
# dbus-sys dependency links libdbus-1 found through pkg-config.
#
# Only the feature build needs this; the default build (simulated adapter)
# does not. Safe to run again: it installs only what is missing.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

need=()
dpkg -s libdbus-1-dev >/dev/null 2>&1 || need+=(libdbus-1-dev)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)

if [ ${#need[@]} -eq 0 ]; then
    echo "install-ble-deps: libdbus-1-dev and pkg-config already present"
    exit 0
fi

echo "install-ble-deps: installing ${need[*]}"
apt_install "${need[@]}"
