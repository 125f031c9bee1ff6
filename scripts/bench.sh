#!/usr/bin/env bash
# Whole-system benchmarks against the real release binaries. Usage:
#   scripts/bench.sh issuance   SVIDs/s through POST /v1/svid/x509 (SQLite and PostgreSQL
#                               backends), beside the raw ECDSA P-256 signing rate measured
#                               in the same run, interleaved A,B,C,A,B,C.
#   scripts/bench.sh agent      FetchX509SVID latency through the Workload API socket for a
#                               cached SVID; one agent issuing and rotating 1,000 entries:
#                               time, agent CPU, agent RSS.
#   scripts/bench.sh proxy      the same keep-alive load against an nginx app directly, through a
#                               Ward proxy pair, an HAProxy mTLS pair and an nginx mTLS pair
#                               (scripts/bench-proxy.sh); requests/s, added latency at a fixed rate, RSS.
#   scripts/bench.sh policy     one Cedar decision with 1,000 policies (criterion + percentiles).
#   scripts/bench.sh vault      KV reads/s and durable writes/s over HTTPS (SQLite and PostgreSQL) beside the
#                               raw store's rate, read p99 at 500 rps, transit ops/s, credential p99
#                               (scripts/bench-vault.sh).
#   scripts/bench.sh gateway    HTTPS requests/s and p50/p99 through `ward gateway` (ES256 JWT, Cedar route
#                               policy, rate-limit check) beside HAProxy 2.6 doing the same (jwt_verify) and
#                               the app directly; p99 at half of peak; token-service tokens/s beside raw
#                               ES256 signing (scripts/bench-gateway.sh).
#   scripts/bench.sh scan       ward scan beside checkov, hadolint, detect-secrets and cargo audit
#                               on the corpus and a generated 100 MB tree (scripts/bench-scan.sh).
# Env: WARD_BENCH_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/test),
#      WARD_BASELINE=/path/to/ward (issuance: the same passes against that binary too, interleaved,
#      e.g. a build of the previous commit; the ratio is printed),
#      DURATION (seconds per pass, default 8), CONNS (default 16).
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-issuance}
case "$what" in
  issuance|agent) ;;
  proxy|policy) exec bash scripts/bench-proxy.sh "$what" ;;
  scan) exec bash scripts/bench-scan.sh ;;
  vault) exec bash scripts/bench-vault.sh ;;
  gateway) exec bash scripts/bench-gateway.sh ;;
  *) echo "usage: scripts/bench.sh issuance|agent|proxy|policy|scan|vault|gateway"; exit 2 ;;
esac

DURATION=${DURATION:-8}
CONNS=${CONNS:-16}
PG_URL=${WARD_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
command -v wrk >/dev/null || { echo "installing wrk (Debian package)"; apt-get install -y wrk >/dev/null; }
echo "building release binaries..."
cargo build --release -q -p ward -p ward-benches
WARD=$PWD/target/release/ward
RAW=$PWD/target/release/raw-sign
FETCH=$PWD/target/release/agent-fetch

TMP=$(mktemp -d /tmp/ward-bench.XXXXXX)
PGDB=ward_bench_$$
cleanup() {
  [ -n "${PIDS:-}" ] && kill $PIDS 2>/dev/null || true
  sleep 0.3
  for db in ${PGDBS:-}; do psql -q "$PG_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
PIDS=""
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 150); do eval "$1" && return 0; sleep 0.2; done; echo "timed out: $1"; exit 1; }

# SQLite: a dev server (one per binary measured).
start_sqlite() { # binary name
  "$1" server --dev --data-dir "$TMP/$2" --listen 127.0.0.1:0 --trust-domain bench.test 2>"$TMP/$2.log" &
  PIDS="$PIDS $!"
  wait_for "[ -s $TMP/$2/dev.env ]"
  ( . "$TMP/$2/dev.env"; echo "$WARD_ADDR $WARD_TOKEN $WARD_CACERT" ) > "$TMP/$2.addr"
}
start_sqlite "$WARD" sqlite

if [ "$what" = agent ]; then
  set -a; . "$TMP/sqlite/dev.env"; set +a
  cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
  rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
  TOKEN=$("$WARD" agent token create --ttl 10m --output json | jq -r .token)
  chmod 755 "$TMP"
  "$WARD" agent --join-token "$TOKEN" --node-name bench --data-dir "$TMP/agent" --socket "$TMP/public/api.sock" 2>"$TMP/agent.log" &
  APID=$!; PIDS="$PIDS $APID"
  wait_for "[ -S $TMP/public/api.sock ]"
  "$WARD" entry create --spiffe-id spiffe://bench.test/ns/bench/sa/me --parent spiffe://bench.test/ward/agent/bench \
    --selector unix:uid:$(id -u) >/dev/null
  wait_for "'$WARD' agent api fetch --socket $TMP/public/api.sock >/dev/null 2>&1"
  echo "FetchX509SVID latency, cached SVID, one connection (2 rounds of 2000):"
  for round in 1 2; do echo "  round $round: $("$FETCH" "$TMP/public/api.sock" 2000)"; done
  echo "agent RSS with 1 entry: $(rss_kib $APID) KiB"

  # 1,000 more entries for this node (other uids, so nothing else changes),
  # sent by one curl process over one keep-alive connection.
  echo "registering 1000 entries..."
  for i in $(seq 1 1000); do
    [ "$i" -gt 1 ] && echo "next"
    echo "url = \"$WARD_ADDR/v1/entries\""
    echo "cacert = \"$WARD_CACERT\""
    echo "header = \"Authorization: Bearer $WARD_TOKEN\""
    echo "header = \"Content-Type: application/json\""
    printf 'data = "{\\"spiffe_id\\":\\"spiffe://bench.test/ns/bench/sa/w%d\\",\\"parent_id\\":\\"spiffe://bench.test/ward/agent/bench\\",\\"selectors\\":[\\"unix:uid:%d\\"],\\"x509_ttl\\":40}"\n' "$i" $((100000 + i))
    echo "output = \"/dev/null\""
  done > "$TMP/entries.curl"
  count_svids() { jq '.svids | length' "$TMP/agent/state.json" 2>/dev/null || echo 0; }
  hz=$(getconf CLK_TCK)
  c0=$(cpu_ticks $APID); t0=$(date +%s.%N)
  # --next resets every option, so each request in the file names the CA itself.
  curl -sS -K "$TMP/entries.curl"
  t_reg=$(date +%s.%N)
  wait_for "[ \$(count_svids) -ge 1001 ]"
  t1=$(date +%s.%N); c1=$(cpu_ticks $APID)
  echo "1000 entries registered in $(echo "$t_reg - $t0" | bc) s; all 1001 SVIDs issued $(echo "$t1 - $t0" | bc) s after the first registration"
  echo "  agent CPU for that (1000 keys and CSRs, 16 batches, sealed state writes): $(echo "scale=2; ($c1 - $c0) / $hz" | bc) s"
  # A 40 s TTL rotates at 20 s: time one full rotation of all 1000.
  jq '.svids | map_values(.issued_at)' "$TMP/agent/state.json" > "$TMP/issued.json"
  rotated() { jq --slurpfile old "$TMP/issued.json" '[.svids | to_entries[] | select(.value.issued_at > ($old[0][.key] // 0))] | length' "$TMP/agent/state.json" 2>/dev/null || echo 0; }
  echo "waiting for the rotation at half-life..."
  r0=""
  for _ in $(seq 600); do
    n=$(rotated)
    if [ -z "$r0" ] && [ "$n" -ge 1 ]; then r0=$(date +%s.%N); rc0=$(cpu_ticks $APID); fi
    [ "$n" -ge 1000 ] && break
    sleep 0.05
  done
  r1=$(date +%s.%N); rc1=$(cpu_ticks $APID)
  echo "rotation of $(rotated) SVIDs: first seen to last seen $(echo "$r1 - $r0" | bc) s (50 ms polling); agent CPU $(echo "scale=2; ($rc1 - $rc0) / $hz" | bc) s"
  echo "agent RSS with 1001 entries and SVIDs: $(rss_kib $APID) KiB"
  exit 0
fi

# PostgreSQL: a configured server on a fresh database, initialized and unsealed.
PGDBS=""
start_pg() { # binary name
  local db="${PGDB}_${2//-/_}" port cacert token
  psql -q "$PG_URL" -c "CREATE DATABASE $db" >/dev/null
  PGDBS="$PGDBS $db"
  port=$(free_port)
  cat > "$TMP/$2.toml" <<TOML
trust_domain = "bench.test"
listen = "127.0.0.1:$port"
data_dir = "$TMP/$2"
storage = "${PG_URL%/*}/$db"
[seal]
shares = 1
threshold = 1
TOML
  "$1" server init --config "$TMP/$2.toml" --output json > "$TMP/$2.init"
  "$1" server --config "$TMP/$2.toml" 2>"$TMP/$2.log" &
  PIDS="$PIDS $!"
  cacert=$(jq -r .cacert "$TMP/$2.init")
  token=$(jq -r .admin_token "$TMP/$2.init")
  wait_for "curl -s --cacert $cacert https://127.0.0.1:$port/v1/sys/seal-status >/dev/null"
  jq -r '.unseal_shares[0]' "$TMP/$2.init" | WARD_ADDR=https://127.0.0.1:$port WARD_CACERT=$cacert "$1" operator unseal >/dev/null
  echo "https://127.0.0.1:$port $token $cacert" > "$TMP/$2.addr"
}
start_pg "$WARD" pg
TARGETS="sqlite pg"
if [ -n "${WARD_BASELINE:-}" ]; then
  start_sqlite "$WARD_BASELINE" sqlite-baseline
  start_pg "$WARD_BASELINE" pg-baseline
  TARGETS="sqlite sqlite-baseline pg pg-baseline"
fi

# One CSR, signed again and again: each request still parses and verifies it,
# signs a new certificate and appends a durable audit record.
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$TMP/k.pem" \
  -subj /CN=bench -addext "subjectAltName=URI:spiffe://bench.test/ns/bench/sa/load" -out "$TMP/csr.pem" 2>/dev/null
jq -Rs '{csr: .}' "$TMP/csr.pem" > "$TMP/body.json"
cat > "$TMP/post.lua" <<'LUA'
wrk.method = "POST"
local f = io.open(os.getenv("BODY_FILE")); wrk.body = f:read("*a"); f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT rps=%.0f p50_ms=%.2f p99_ms=%.2f non2xx=%d sockerr=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    e.status, e.connect + e.read + e.write + e.timeout))
end
LUA

check_200() { # addr token cacert
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$3" -H "Authorization: Bearer $2" \
    -H 'Content-Type: application/json' --data-binary @"$TMP/body.json" "$1/v1/svid/x509")
  [ "$code" = 200 ] || { echo "target $1 answered $code, not 200"; exit 1; }
}
for t in $TARGETS; do read -r A T C < "$TMP/$t.addr"; check_200 "$A" "$T" "$C"; done

run_wrk() { # name addrfile
  local A T C line
  read -r A T C < "$2"
  line=$(BODY_FILE="$TMP/body.json" BENCH_TOKEN="$T" wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$TMP/post.lua" "$A/v1/svid/x509" | grep '^RESULT')
  echo "$1 $line"
}

echo "issuance benchmark: $DURATION s per pass, $CONNS connections, $(nproc) cores"
for round in 1 2; do
  raw=$("$RAW" 2 "$DURATION" sign | awk '{print $2}')
  echo "raw-sign round=$round ops_per_second=$raw"
  rawvs=$("$RAW" 2 "$DURATION" verify-sign | awk '{print $2}')
  echo "raw-verify-sign round=$round ops_per_second=$rawvs"
  for t in $TARGETS; do run_wrk "$t round=$round" "$TMP/$t.addr"; done
done | tee "$TMP/results"

echo
awk '
  /^raw-sign/ { split($3, a, "="); raw += a[2]; nraw++ }
  /^raw-verify-sign/ { split($3, a, "="); rvs += a[2]; nrvs++ }
  /^sqlite round/ { for (i = 1; i <= NF; i++) if ($i ~ /^rps=/) { split($i, a, "="); s[++ns] = a[2] } }
  /^pg round/ { for (i = 1; i <= NF; i++) if ($i ~ /^rps=/) { split($i, a, "="); p[++np] = a[2] } }
  /^sqlite-baseline/ { for (i = 1; i <= NF; i++) if ($i ~ /^rps=/) { split($i, a, "="); sb += a[2]; nsb++ } }
  /^pg-baseline/ { for (i = 1; i <= NF; i++) if ($i ~ /^rps=/) { split($i, a, "="); pb += a[2]; npb++ } }
  END {
    r = raw / nraw
    printf "raw ECDSA P-256 signing (2 threads): %.0f/s (mean of %d)\n", r, nraw
    v = rvs / nrvs
    printf "raw verify+sign pairs (2 threads):   %.0f/s (mean of %d)\n", v, nrvs
    printf "SQLite issuance:     %s, %s /s -> %.1f%% of raw signing, %.1f%% of raw verify+sign\n", s[1], s[2], 100 * (s[1] + s[2]) / 2 / r, 100 * (s[1] + s[2]) / 2 / v
    printf "PostgreSQL issuance: %s, %s /s -> %.1f%% of raw signing, %.1f%% of raw verify+sign\n", p[1], p[2], 100 * (p[1] + p[2]) / 2 / r, 100 * (p[1] + p[2]) / 2 / v
    if (nsb) printf "against the baseline binary: SQLite %.0f vs %.0f /s (%.2fx), PostgreSQL %.0f vs %.0f /s (%.2fx)\n", (s[1] + s[2]) / 2, sb / nsb, (s[1] + s[2]) / 2 / (sb / nsb), (p[1] + p[2]) / 2, pb / npb, (p[1] + p[2]) / 2 / (pb / npb)
  }' "$TMP/results"
if grep -q 'non2xx=[1-9]\|sockerr=[1-9]' "$TMP/results"; then echo "FAILED PASSES: some requests were not 200"; exit 1; fi
