#!/usr/bin/env bash
# The hostile load test at full size: release build of the `inspect` example as the
# server, examples/hostile as the client on loopback (2 cores shared by both).
# Usage: bash benches/hostile.sh [extra flags for hostile, e.g. --seconds 20 --rounds 5]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p tower-wechatpay-inspect --example inspect --example hostile
target/release/examples/hostile --server target/release/examples/inspect "$@"
