#!/usr/bin/env bash
# Acknowledged events/s of this checkout's gateway against an earlier commit's,
# measured in the same run with the same client (the ws_e2e bench), rounds
# alternating between the two builds.
#
#   scripts/bench-ingest-vs.sh [BASE_COMMIT] [ROUNDS]
#
# BASE_COMMIT defaults to e9cd2a5, the last commit before the buffer became its
# own crate (on-disk postings, ledger, duplicate window). The base is built in
# a worktree under target/ with the same target directory, so only the
# workspace's own crates are compiled twice.
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
echo "==> building the gateway at $base"
(cd "$wt" && CARGO_TARGET_DIR="$root/target" cargo build --release -q -p emotion-gateway)
cp target/release/emotion-gateway target/bench-gateway-base
echo "==> building the gateway of this checkout"
cargo build --release -q -p emotion-gateway
cp target/release/emotion-gateway target/bench-gateway-current
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
