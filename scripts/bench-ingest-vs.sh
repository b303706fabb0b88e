#!/usr/bin/env bash
# Acknowledged events/s of this checkout's gateway against an earlier commit's,
# measured in the same run with the same client (the ws_e2e bench), rounds
# alternating between the two builds.
#
#   scripts/bench-ingest-vs.sh [BASE_COMMIT] [ROUNDS]
#
# BASE_COMMIT defaults to e9cd2a5, the last commit before the buffer became its
# own crate (on-disk postings, ledger, duplicate window). The base is built in
# a worktree under target/ with its own target directory (target/bench-base,
# seeded with a copy of target/release the first time so that dependencies are
# not compiled again). It must not share target/: cargo names the workspace's
# crates by their path relative to the workspace root, so the two checkouts
# would share artifacts and fingerprints, and the second build would find the
# first one's output "fresh" and compare a binary with itself. The script
# refuses to compare two identical binaries.
#
# After the ws_e2e rounds, scripts/bench-load-vs.sh runs both binaries under
# the load tool (WebSocket and MQTT QoS 1) and prints the gateway's CPU per
# event beside events/s.
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:-e9cd2a5}
rounds=${2:-3}
root=$PWD
wt=target/bench-base-src
if [ -d "$wt" ]; then
    git -C "$wt" checkout --detach -q "$base"
else
    git worktree add --detach -q "$wt" "$base"
fi
base_target=$root/target/bench-base
if [ ! -d "$base_target/release" ] && [ -d target/release ]; then
    mkdir -p "$base_target"
    cp -a target/release "$base_target/"
fi
echo "==> building the gateway at $base"
(cd "$wt" && CARGO_TARGET_DIR="$base_target" cargo build --release -q -p emotion-gateway)
cp "$base_target/release/emotion-gateway" target/bench-gateway-base
echo "==> building the gateway of this checkout"
cargo build --release -q -p emotion-gateway -p emotion-firmware-sim
cp target/release/emotion-gateway target/bench-gateway-current
if cmp -s target/bench-gateway-base target/bench-gateway-current; then
    echo "the two builds are the same binary: nothing to compare (is $base this checkout's code?)" >&2
    exit 1
fi
cargo bench -q -p emotion-tests --bench ws_e2e --no-run
rate() { grep -o 'throughput: [0-9]*' | grep -o '[0-9]*$'; }
declare -a b c
for r in $(seq 1 "$rounds"); do
    b+=("$(EMOTION_GATEWAY_BIN=$root/target/bench-gateway-base cargo bench -q -p emotion-tests --bench ws_e2e 2>/dev/null | rate)")
    c+=("$(EMOTION_GATEWAY_BIN=$root/target/bench-gateway-current cargo bench -q -p emotion-tests --bench ws_e2e 2>/dev/null | rate)")
    echo "round $r: base ${b[-1]} events/s, this checkout ${c[-1]} events/s, ratio $(python3 -c "print(f'{${c[-1]}/${b[-1]}:.2f}')")"
done
python3 - "${b[*]}" "${c[*]}" <<'PY'
import statistics, sys
b = [float(x) for x in sys.argv[1].split()]
c = [float(x) for x in sys.argv[2].split()]
print(f"median: base {statistics.median(b):.0f} events/s, this checkout {statistics.median(c):.0f} events/s, "
      f"ratio {statistics.median(c) / statistics.median(b):.2f}")
PY
scripts/bench-load-vs.sh target/bench-gateway-base target/bench-gateway-current "$rounds"
