#!/usr/bin/env bash
# Runs every fuzz target in turn, seeded with fuzz/seeds/, and prints executions and
# crashes per target. Needs cargo-fuzz and a nightly toolchain:
#   cargo install cargo-fuzz && rustup toolchain install nightly
# Usage: bash fuzz/run.sh [seconds per target, default 600] [target ...]
# The pure-Rust backend: FUZZ_FEATURES="--no-default-features --features rustcrypto" bash fuzz/run.sh
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(layer envelope decrypt keys)

# shellcheck disable=SC2086
features=(${FUZZ_FEATURES:-})
backend=$([ ${#features[@]} -gt 0 ] && echo "${features[*]}" || echo "default features")
cargo +nightly fuzz build "${features[@]}"
for target in "${targets[@]}"; do
  mkdir -p "corpus/$target" "artifacts/$target"
  log="artifacts/$target/run-$(date +%s).log"
  status=0
  cargo +nightly fuzz run "${features[@]}" "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
    >"$log" 2>&1 || status=$?
  execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || echo '?')
  crashes=$(find "artifacts/$target" -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' | wc -l)
  echo "$target ($backend): ${seconds}s, $execs executions, coverage $cov edges, corpus $(ls "corpus/$target" | wc -l) inputs, $crashes crashes (exit $status)"
done
