#!/usr/bin/env bash
# HTTP deposits against a running `bank serve`, measured with oha on loopback.
#
#   benches/bank_http.sh [sqlite|postgres] [seconds] [connections]
#
# Opens 1,000 accounts, then (1) drives deposits spread over them as fast as the
# connections (default 64) go, and (2) drives them at half that rate and reports the
# latency percentiles. Needs `oha` (cargo install --locked oha) and, for postgres,
# TEST_DATABASE_URL.
# Prints one summary line per run; the server's database is a fresh temporary one.
set -euo pipefail
cd "$(dirname "$0")/.."

backend="${1:-sqlite}"
seconds="${2:-10}"
connections="${3:-64}"
command -v oha >/dev/null || { echo "oha is not installed: cargo install --locked oha" >&2; exit 2; }

cargo build --release -q -p bank
work="$(mktemp -d)"
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$work"' EXIT

case "$backend" in
  sqlite) database="sqlite://$work/bank.db" ;;
  postgres)
    : "${TEST_DATABASE_URL:?set TEST_DATABASE_URL for the postgres run}"
    database="$TEST_DATABASE_URL?schema=rwb_http_$(date +%s)" ;;
  *) echo "usage: $0 [sqlite|postgres] [seconds] [connections]" >&2; exit 2 ;;
esac

RUST_LOG=error target/release/bank serve --listen 127.0.0.1:0 --database "$database" > "$work/out" 2> "$work/err" &
server=$!
for _ in $(seq 100); do grep -q listening "$work/out" 2>/dev/null && break; sleep 0.1; done
base="$(sed -n 's/^listening on //p' "$work/out")"
[ -n "$base" ] || { cat "$work/err" >&2; exit 1; }

python3 - "$base" > "$work/accounts" <<'PY'
import json, sys, urllib.request
base = sys.argv[1]
for _ in range(1000):
    request = urllib.request.Request(f"{base}/api/accounts", data=b'{"account": {"initial_balance": 1000}}',
                                     headers={"content-type": "application/json"}, method="POST")
    print(json.load(urllib.request.urlopen(request))["data"]["uuid"])
PY
sed "s|.*|$base/api/accounts/&/deposit|" "$work/accounts" > "$work/urls"

run() { # $1 = extra oha flags; prints oha's JSON summary
  oha --no-tui --output-format json -z "${seconds}s" -c "$connections" -m POST -H 'content-type: application/json' \
      -d '{"deposit_amount": 1}' --urls-from-file $1 "$work/urls"
}
summary() {
  python3 -c '
import json, sys
r = json.load(sys.stdin)
s, p = r["summary"], r["latencyPercentiles"]
codes = r.get("statusCodeDistribution", {})
rate, p50, p99 = s["requestsPerSec"], p["p50"] * 1000, p["p99"] * 1000
print("%-10s %10.0f req/s  p50 %6.2f ms  p99 %6.2f ms  status %s" % (sys.argv[1], rate, p50, p99, codes))
' "$1"
}

full="$(run "")"
echo "$full" | summary "max"
rate="$(echo "$full" | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["summary"]["requestsPerSec"] / 2))')"
run "-q $rate" | summary "half rate"
