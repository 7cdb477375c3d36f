#!/usr/bin/env bash
# HTTP load on loopback: wrk against an axum server with the layer (/notify) and the same
# server without it (/raw: reads the body, answers 200), on this machine's cores; then the
# server's memory with 10,000 requests in flight at the body limit.
#
#   bash benches/load.sh          # RUNS=3 DURATION=10s CONNECTIONS=64 INFLIGHT=10000
#
# wrk comes from Debian's packages (installed when missing). Each wrk run is bounded in
# time; the server and the clients stop by themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
INFLIGHT=${INFLIGHT:-10000}
work=target/load
mkdir -p "$work"
log() { printf '%s\n' "$*" >&2; }

if ! command -v wrk >/dev/null; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq && $sudo apt-get install -y -qq wrk >/dev/null
fi

# Server and client each hold one descriptor per in-flight connection.
ulimit -n $((INFLIGHT * 2 + 1000)) 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo build --release --quiet -p tower-wechatpay-benches --example throughput --example inflight
server_log="$work/server.log"
target/release/examples/inflight serve --listen 127.0.0.1:0 2>"$server_log" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q "listening on" "$server_log" && break; sleep 0.1; done
addr=$(grep -o "listening on .*" "$server_log" | cut -d' ' -f3)

run() { # path → "requests/s p50 p99 non2xx"
  local out rps p50 p99 bad
  out=$(wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency -s benches/load.lua "http://$addr" -- "$work/requests" "$1")
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
  bad=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  echo "$rps $p50 $p99 ${bad:-0}"
}

results="$work/results.txt"
: > "$results"
for round in $(seq 1 "$RUNS"); do
  # Fresh signatures each round, well inside the 5-minute window.
  rm -rf "$work/requests"
  target/release/examples/throughput --export "$work/requests" --count 2000 2>/dev/null
  (cd "$work/requests" && ls -- *.http > index)
  for path in /notify /raw; do
    line=$(run "$path")
    log "round $round $path: $line"
    echo "$round $path $line" >> "$results"
  done
done

python3 - "$results" "$(nproc)" "$CONNECTIONS" "$DURATION" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1]) if line.strip()]
def ms(text):
    unit = text.lstrip("0123456789.")
    value = float(text[: len(text) - len(unit)])
    return value * {"us": 0.001, "ms": 1, "s": 1000}[unit]
print(f"\nwrk -t2 -c{sys.argv[3]} -d{sys.argv[4]} on loopback, {sys.argv[2]} cores shared by wrk and the server, medians of {len(rows)//2} runs")
print("| server | notifications/s | p50 | p99 | non-2xx |")
print("|---|---:|---:|---:|---:|")
medians = {}
for path, name in (("/notify", "axum + WechatPayLayer"), ("/raw", "same axum server, no layer")):
    sel = [r for r in rows if r[1] == path]
    rps = statistics.median(float(r[2]) for r in sel)
    medians[path] = rps
    p50 = statistics.median(ms(r[3]) for r in sel)
    p99 = statistics.median(ms(r[4]) for r in sel)
    bad = sum(int(r[5]) for r in sel)
    print(f"| {name} | {rps:,.0f} | {p50:.2f} ms | {p99:.2f} ms | {bad} |")
ratios = [float(a[2]) / float(b[2]) for a, b in zip([r for r in rows if r[1] == "/raw"], [r for r in rows if r[1] == "/notify"])]
print(f"\nthe layer's cost: the server without it answers {statistics.median(ratios):.1f}× as many requests per second (same runs)")
PY

log "== memory with $INFLIGHT requests in flight at the body limit"
for path in /notify /raw; do
  target/release/examples/inflight hold --connect "$addr" --path "$path" --connections "$INFLIGHT" --server-pid "$server"
done
