#!/usr/bin/env bash
# Mutation testing of the request path (issue 10, item 16). NOT part of .ci/run: each mutant
# costs an incremental build of the library, its unit tests and tests/it (2–10 s with the
# kept target directory) and their run (4–16 s); the ~270 mutants take 20–35 min on 2 cores.
# Results: .ci/mutants.md.
#
#   bash .ci/mutants.sh                        # every file below
#   bash .ci/mutants.sh src/checks.rs          # only these files (any of the list)
#   bash .ci/mutants.sh -- -F 'check_refund'   # extra cargo-mutants flags after --
#
# Needs `cargo install cargo-mutants --locked`. Mutants are built in a copy of the tree (never
# --in-place: other builds may share the work tree), with a target directory of their own
# (MUTANTS_TARGET_DIR) that keeps the dependencies between runs, and without debug info, which
# halves link time. Output: mutants.out/ (or $MUTANTS_OUT/mutants.out): caught.txt,
# missed.txt, timeout.txt, unviable.txt, outcomes.json.
set -euo pipefail
cd "$(dirname "$0")/.."

FILES=(
  src/verify.rs
  src/decrypt.rs
  src/pipeline.rs
  src/outcome.rs
  src/checks.rs
  src/dedupe/mod.rs
  src/dedupe/memory.rs
  src/future.rs
  src/log.rs
)

files=()
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --) shift; extra=("$@"); break ;;
    *) files+=("$1"); shift ;;
  esac
done
[ ${#files[@]} -gt 0 ] || files=("${FILES[@]}")

file_args=()
for f in "${files[@]}"; do
  printf '%s\n' "${FILES[@]}" | grep -qxF "$f" || { echo "not one of the mutated files: $f"; exit 2; }
  file_args+=(--file "$f")
done

command -v cargo-mutants >/dev/null || { echo "cargo install cargo-mutants --locked"; exit 2; }

export CARGO_TARGET_DIR="${MUTANTS_TARGET_DIR:-${TMPDIR:-/tmp}/tower-wechatpay-mutants-target}"
export CARGO_PROFILE_DEV_DEBUG=0 CARGO_PROFILE_TEST_DEBUG=0
export CARGO_TERM_COLOR=never

# The default crypto backend (aws-lc-rs) plus `redis`, so that the Redis tests in tests/it
# run too (they start their own redis-server). Built and run: the library's unit tests and
# tests/it, nothing else (no examples, doc tests or workspace members). They are cargo args
# (--cargo-arg), not test args after `--`, so that the build phase builds only those too.
exec cargo mutants \
  --package tower-wechatpay \
  --features redis \
  "${file_args[@]}" \
  --jobs "${MUTANTS_JOBS:-1}" \
  --timeout "${MUTANTS_TIMEOUT:-60}" \
  --build-timeout "${MUTANTS_BUILD_TIMEOUT:-900}" \
  --output "${MUTANTS_OUT:-.}" \
  --no-shuffle \
  --cargo-arg=--lib --cargo-arg=--test --cargo-arg=it \
  "${extra[@]}"
