#!/usr/bin/env bash
# Side by side, in one run, on the same notifications: OpenSSL's raw crypto floor, this
# crate's full layer path under both backends, Python wechatpayv3, Node
# wechatpay-axios-plugin and wechatpay-node-v3. One core each, interleaved rounds (the
# machine's speed drifts); the table shows medians over rounds and ratios from the same runs.
#
#   bash benches/compare.sh            # ROUNDS=5 COUNT=2000 SECONDS_PER=2 by default
#
# Installs what it needs under target/compare (a Python venv from PyPI, Node packages from
# npm) and prints every version it used. The notifications come from the independent
# generator ../shared/tools/gen_fixtures.py (Python `cryptography`).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
COUNT=${COUNT:-2000}
SECONDS_PER=${SECONDS_PER:-2}
work=target/compare
mkdir -p "$work"
log() { printf '%s\n' "$*" >&2; }

generator=../shared/tools/gen_fixtures.py
[ -f "$generator" ] || { log "compare: $generator not found (it ships in ../shared)"; exit 1; }

log "== installing peers"
[ -x "$work/venv/bin/python" ] || python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q "cryptography==50.0.2" "wechatpayv3==2.0.4"
if [ ! -d "$work/node/node_modules/wechatpay-axios-plugin" ]; then
  mkdir -p "$work/node"
  (cd "$work/node" && npm init -y >/dev/null && npm install --silent --no-audit --no-fund \
    wechatpay-axios-plugin@0.9.6 wechatpay-node-v3@2.2.1)
fi
command -v openssl >/dev/null || { log "compare: openssl not found"; exit 1; }

log "== building this crate's throughput example under both backends"
cargo build --release --quiet -p tower-wechatpay-benches --example throughput
cp target/release/examples/throughput "$work/throughput-aws-lc-rs"
cargo build --release --quiet -p tower-wechatpay-benches --no-default-features --features rustcrypto --example throughput
cp target/release/examples/throughput "$work/throughput-rustcrypto"

log "== generating $COUNT notifications (fresh timestamps)"
rm -rf "$work/fixtures"
"$work/venv/bin/python" "$generator" --out "$work/fixtures" -n "$COUNT" --seed 7 --start now --spacing 0 >&2

results="$work/results.tsv"
: > "$results"
floor() {
  # RSA-2048 verify + SHA-256 over the signed message + AES-256-GCM over the resource.
  local body plain verify sha aes
  body=$("$work/venv/bin/python" -c "import json;print(int(json.load(open('$work/fixtures/meta.json'))['body_bytes']['median']))")
  plain=$("$work/venv/bin/python" -c "import json;print(int(json.load(open('$work/fixtures/meta.json'))['plaintext_bytes']['median']))")
  verify=$(openssl speed -mr -seconds "$SECONDS_PER" rsa2048 2>/dev/null | awk -F: '/^\+F2:/ {print $5}')
  sha=$(openssl speed -mr -seconds 1 -bytes $((body + 60)) sha256 2>/dev/null | awk -F: '/^\+F:/ {print $4}')
  aes=$(openssl speed -mr -seconds 1 -bytes $((plain + 16)) -evp aes-256-gcm 2>/dev/null | awk -F: '/^\+F:/ {print $4}')
  "$work/venv/bin/python" -c "print(1e9/$verify + 1e9*($body+60)/$sha + 1e9*($plain+16)/$aes)"
}
rust() {
  "$work/throughput-$1" --fixtures "$work/fixtures" --seconds "$SECONDS_PER" \
    | awk '/^layer:/ {print $4 * 1000}'
}
for round in $(seq 1 "$ROUNDS"); do
  log "== round $round/$ROUNDS"
  # The floor and the layer run back to back (their order alternating), so their ratio is
  # taken under the same machine conditions; the others rotate around them.
  if (( round % 2 )); then pair=(floor aws); else pair=(aws floor); fi
  others=(rust-crypto python node)
  impls=("${pair[@]}")
  for i in 0 1 2; do impls+=("${others[$(( (i + round) % 3 ))]}"); done
  for impl in "${impls[@]}"; do
    case $impl in
      floor) printf '%s\t%s\t%s\n' "$round" "OpenSSL floor (verify+SHA-256+AES-GCM)" "$(floor)" >> "$results" ;;
      aws) printf '%s\t%s\t%s\n' "$round" "tower-wechatpay, aws-lc-rs (full layer)" "$(rust aws-lc-rs)" >> "$results" ;;
      rust-crypto) printf '%s\t%s\t%s\n' "$round" "tower-wechatpay, rustcrypto (full layer)" "$(rust rustcrypto)" >> "$results" ;;
      python) "$work/venv/bin/python" benches/peers/peer_python.py "$work/fixtures" "$SECONDS_PER" \
                | sed "s/^/$round\tPython /" >> "$results" ;;
      node) NODE_PATH="$work/node/node_modules" node benches/peers/peer_node.js "$work/fixtures" "$SECONDS_PER" \
                | sed "s/^/$round\tNode /" >> "$results" ;;
    esac
  done
done

log "== versions"
{
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -sr)"
  echo "rustc: $(rustc --version)"
  echo "openssl: $(openssl version)"
  echo "python: $("$work/venv/bin/python" -c 'import sys,cryptography,wechatpayv3;print(sys.version.split()[0], "cryptography", cryptography.__version__, "wechatpayv3", wechatpayv3.__version__)')"
  echo "node: $(node --version), $(cd "$work/node" && node -e "for (const m of ['wechatpay-axios-plugin','wechatpay-node-v3']) process.stdout.write(m+' '+require(m+'/package.json').version+' ')")"
  echo "notifications: $COUNT from gen_fixtures.py, $ROUNDS interleaved rounds of ${SECONDS_PER}s each"
} | tee "$work/versions.txt"

"$work/venv/bin/python" - "$results" <<'PY'
import collections, statistics, sys
rows = [line.rstrip("\n").split("\t") for line in open(sys.argv[1]) if line.strip()]
by_round = collections.defaultdict(dict)
for rnd, name, ns in rows:
    by_round[rnd][name] = float(ns)
names = list(dict.fromkeys(name for _, name, _ in rows))
ours = "tower-wechatpay, aws-lc-rs (full layer)"
floor = "OpenSSL floor (verify+SHA-256+AES-GCM)"
def med(name):
    return statistics.median(r[name] for r in by_round.values() if name in r)
def ratio(a, b):
    # Ratios are taken within each round, then the median over rounds.
    return statistics.median(r[a] / r[b] for r in by_round.values() if a in r and b in r)
peers = [n for n in names if n.startswith(("Python", "Node"))]
fastest_peer = min(peers, key=med)
print()
print(f"| implementation | µs per notification (median) | per core/s | × OpenSSL floor | aws-lc-rs layer is faster by |")
print(f"|---|---:|---:|---:|---:|")
for name in sorted(names, key=med):
    us = med(name) / 1000
    print(f"| {name} | {us:.1f} | {1e6/us:,.0f} | {ratio(name, floor):.2f} | {ratio(name, ours):.2f}× |")
print()
print(f"aws-lc-rs layer vs OpenSSL floor: {ratio(ours, floor):.2f}× (target ≤ 1.25)")
print(f"fastest peer ({fastest_peer}) vs aws-lc-rs layer: {ratio(fastest_peer, ours):.2f}× slower (target ≥ 1.7)")
rc = "tower-wechatpay, rustcrypto (full layer)"
print(f"rustcrypto layer vs OpenSSL floor: {ratio(rc, floor):.2f}×; vs aws-lc-rs layer: {ratio(rc, ours):.2f}×")
PY
