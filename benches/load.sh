#!/usr/bin/env bash
# Runs the shared side-by-side harness (../shared/bench) with Runway included, in both token scenarios, then
# draws benches/results.svg from the two results.json files. Loopback only; bounded (ROUNDS x targets x 10 s).
#
#   benches/load.sh                  # 5 rounds, R-runway vs A-haproxy vs C-nginx-noauth, same_token + unique_tokens
#   ROUNDS=3 benches/load.sh         # fewer rounds (a smoke run; quote 5+)
#
# The harness installs its peers with apt on first use (needs root). Results go to $BENCH_OUT (default
# /tmp/runway-bench); the script prints the two results directories and writes benches/results.svg.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-5}
targets=${TARGETS:-R-runway,A-haproxy,C-nginx-noauth}
export BENCH_OUT=${BENCH_OUT:-/tmp/runway-bench}

cargo build --release --locked
harness=../shared/bench/bench.sh

latest() { ls -1d "$BENCH_OUT"/results/*/ 2>/dev/null | sort | tail -n 1; }

echo "== same_token: one token per run (a verified-token cache hits)"
"$harness" -o "$targets" -r "$rounds"
same=$(latest)
echo "== unique_tokens: 20000 distinct tokens per run (every request a cold verification)"
"$harness" -u 20000 -o "$targets" -r "$rounds"
unique=$(latest)

python3 benches/chart.py "$same/results.json" "$unique/results.json" benches/results.svg
echo "results: $same $unique"
echo "chart:   benches/results.svg"
