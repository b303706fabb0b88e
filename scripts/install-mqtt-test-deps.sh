#!/usr/bin/env bash
# Installs what the MQTT end-to-end tests and benchmark need: Mosquitto (the
# tests start private instances of the broker with their own configuration)
# and its command-line clients mosquitto_pub and mosquitto_sub, which speak
# MQTT 3.1.1 and 5 to the gateway's embedded broker. Debian/Ubuntu.
#
#   scripts/install-mqtt-test-deps.sh
#
# The tests never install anything themselves: without these tools they fail
# and name this script. Safe to run again: it installs only what is missing.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

need=()
command -v mosquitto_pub >/dev/null 2>&1 && command -v mosquitto_sub >/dev/null 2>&1 \
    || need+=(mosquitto-clients)
{ command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; } || need+=(mosquitto)

if [ ${#need[@]} -eq 0 ]; then
    echo "install-mqtt-test-deps: mosquitto and mosquitto-clients already present"
    exit 0
fi

echo "install-mqtt-test-deps: installing ${need[*]}"
apt_install "${need[@]}"
