#!/usr/bin/env bash
# Runs every fuzz target (or the ones named as arguments) for a bounded time each, starting from the
# committed seeds in fuzz/corpus/<target>/, and exits non-zero if any target finds a crash (the input is
# then in fuzz/artifacts/<target>/). Installs cargo-fuzz when missing.
#
#   fuzz/run.sh                          every target, 30 s each
#   FUZZ_SECONDS=300 fuzz/run.sh jwt     one target, 5 minutes
#
# Environment: FUZZ_SECONDS (default 30), FUZZ_SANITIZER (default "none": Runway forbids unsafe code, and
# without ASan a run does about twice the executions; "address" for the cargo-fuzz default).
#
# libFuzzer needs a nightly toolchain. Without one this prints how to get it and exits 0, so a machine
# with only stable Rust (and CI on it) is not failed for lacking a tool.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${FUZZ_SECONDS:-30}"
sanitizer="${FUZZ_SANITIZER:-none}"
all_targets=(jwt aws_token policy config path)
if [ "$#" -gt 0 ]; then targets=("$@"); else targets=("${all_targets[@]}"); fi

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  cat <<'MSG'
fuzz/run.sh: skipped: no nightly Rust toolchain (libFuzzer instrumentation needs nightly).
To fuzz:  rustup toolchain install nightly --profile minimal
          cargo install cargo-fuzz --locked
          fuzz/run.sh                      # or: cd fuzz && cargo +nightly fuzz run jwt -- -max_total_time=60
MSG
  exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

# Release with debug assertions: optimised, and an integer overflow panics instead of wrapping.
build_flags=(--release --debug-assertions --sanitizer "$sanitizer")
echo "== building ${targets[*]} (nightly, sanitizer ${sanitizer})"
start=$(date +%s)
if [ "$#" -gt 0 ]; then
  for target in "${targets[@]}"; do cargo +nightly fuzz build "${build_flags[@]}" "$target"; done
else
  cargo +nightly fuzz build "${build_flags[@]}"
fi
echo "== built in $(( $(date +%s) - start )) s"

log_dir=target/run-logs
mkdir -p "$log_dir"
failed=()
for target in "${targets[@]}"; do
  echo "== fuzzing ${target} for ${seconds} s"
  log="${log_dir}/${target}.log"
  # -timeout: one input taking this long is a finding (quadratic blowup); -rss_limit_mb: so is this much
  # memory. Both far above what any legitimate input needs.
  dict=()
  if [ -f "${target}.dict" ]; then dict=(-dict="${target}.dict"); fi
  status=0
  cargo +nightly fuzz run "${build_flags[@]}" "$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 ${dict[@]+"${dict[@]}"} >"$log" 2>&1 || status=$?
  grep -E '^(#[0-9]+\s+(INITED|DONE)|Done [0-9]+ runs|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" || true
  if [ "$status" -ne 0 ]; then
    failed+=("$target")
    echo "!! ${target} failed (exit ${status}); last lines of ${PWD}/${log}:"
    tail -n 40 "$log"
    ls -1 "artifacts/${target}/" 2>/dev/null | sed "s|^|   crash input: ${PWD}/artifacts/${target}/|" || true
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz/run.sh: crash found in: ${failed[*]}" >&2
  echo "reproduce: cd fuzz && cargo +nightly fuzz run ${build_flags[*]} <target> artifacts/<target>/<file>" >&2
  exit 1
fi
echo "fuzz/run.sh: no crash (${targets[*]}, ${seconds} s each)"
