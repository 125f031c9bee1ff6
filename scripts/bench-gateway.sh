#!/usr/bin/env bash
# The edge benchmark (run through scripts/bench.sh gateway).
# gateway: one nginx app serving a 1 KiB file; the same keep-alive HTTPS load
#   (TLS 1.3, ECDSA P-256, one ES256 bearer token from Ward's token service)
#   through `ward gateway` (JWT validation against the issuer's JWKS, the
#   revoked list, a Cedar route policy on the scope, a GCRA rate-limit check
#   keyed by subject) and through HAProxy 2.6 doing the same (jwt_verify with
#   the public key, exp checked, a stick-table rate check keyed by sub), and
#   plain HTTP to the app directly. Each proxy gets one core (WARD_THREADS=1,
#   nbthread 1). Passes interleaved (direct, ward, haproxy) x ROUNDS; then
#   latency at half of the gateway's peak (open loop), each proxy in turn.
# tokens: client-credentials tokens/s from the token service (every issuance
#   audited, durably, before it is answered) beside the raw ECDSA P-256
#   signing rate of this machine, same run.
# Env: DURATION (s per pass, default 8), CONNS (default 32), ROUNDS (default 2),
#      PROFILE=1: instead of measuring, record the gateway under load with perf and print where
#      its time goes.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-8}
CONNS=${CONNS:-32}
ROUNDS=${ROUNDS:-2}
need=()
for p in wrk haproxy nginx jq; do command -v "$p" >/dev/null || [ -x "/usr/sbin/$p" ] || need+=("$p"); done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} (Debian packages)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${need[@]}" >/dev/null
fi
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
echo "building release binaries..."
cargo build --release -q -p ward -p ward-benches
WARD=$PWD/target/release/ward
LOAD=$PWD/target/release/rate-load
RAW=$PWD/target/release/raw-sign

TMP=$(mktemp -d /tmp/ward-bench-gateway.XXXXXX)
chmod 755 "$TMP"
cleanup() {
  for g in ${GROUPS_STARTED:-}; do kill -- -"$g" 2>/dev/null || true; done
  sleep 0.3
  for g in ${GROUPS_STARTED:-}; do kill -9 -- -"$g" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
GROUPS_STARTED=""
start() { setsid "$@" & GROUPS_STARTED="$GROUPS_STARTED $!"; LAST=$!; }
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 150); do eval "$1" && return 0; sleep 0.2; done; echo "timed out: $1"; exit 1; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

# The token service: a dev server, one client, one token.
start "$WARD" server --dev --data-dir "$TMP/server" --listen 127.0.0.1:0 --trust-domain bench.test
SERVER_PID=$LAST
wait_for "[ -s $TMP/server/dev.env ]"
set -a; . "$TMP/server/dev.env"; set +a
SECRET=$("$WARD" client create bench --scope api:read --audience bench-api --output json | jq -r .client_secret)
ISSUER=$(curl -s --cacert "$WARD_CACERT" "$WARD_ADDR/.well-known/openid-configuration" | jq -r .issuer)
token() { curl -s --cacert "$WARD_CACERT" -u "bench:$SECRET" -d grant_type=client_credentials "$ISSUER/oauth/token" | jq -r .access_token; }
TOKEN=$(token)
[ -n "$TOKEN" ] && [ "$TOKEN" != null ] || { echo "no token from the token service"; exit 1; }
# The signing key as PEM, for HAProxy (P-256 SubjectPublicKeyInfo around x, y).
curl -s --cacert "$WARD_CACERT" "$ISSUER/oauth/jwks" | python3 -c '
import base64, json, sys
k = json.load(sys.stdin)["keys"][0]
d = lambda s: base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
der = bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d030107034200") + b"\x04" + d(k["x"]) + d(k["y"])
b = base64.b64encode(der).decode()
print("-----BEGIN PUBLIC KEY-----\n" + "\n".join(b[i:i+64] for i in range(0, len(b), 64)) + "\n-----END PUBLIC KEY-----")
' > "$TMP/jwt-pub.pem"

# The app: nginx, one worker, a static 1 KiB file.
APP=$(free_port)
mkdir -p "$TMP/www" "$TMP/logs"
head -c 1024 /dev/zero | tr '\0' 'x' > "$TMP/www/1k"
cat > "$TMP/app.conf" <<EOF
daemon off; worker_processes 1; pid $TMP/app.pid; error_log $TMP/logs/app.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$APP; root $TMP/www; location / { } } }
EOF
start "$NGINX" -c "$TMP/app.conf" -p "$TMP"

# One server certificate (IP SAN) for both fronts.
cd "$TMP"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=bench-ca 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout front.key -out front.csr -subj /CN=front 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > front.ext
openssl x509 -req -in front.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile front.ext -out front.pem 2>/dev/null
cat front.pem front.key > front.bundle.pem
cd - >/dev/null

# The gateway.
GW=$(free_port); GWA=$(free_port)
cat > "$TMP/gateway.toml" <<EOF
listen = "127.0.0.1:$GW"
[tls]
cert = "$TMP/front.pem"
key = "$TMP/front.key"
[admin]
listen = "127.0.0.1:$GWA"
[[issuer]]
name = "ward"
issuer = "$ISSUER"
ca = "$WARD_CACERT"
algorithms = ["ES256"]
audiences = ["bench-api"]
[[route]]
name = "app"
path_prefix = "/"
auth = "jwt"
methods = ["GET"]
upstream = "127.0.0.1:$APP"
policy = 'permit(principal, action, resource) when { principal.scopes.contains("api:read") };'
rate_limit = { rate = 100000000, per = "1s", key = "subject" }
EOF
WARD_THREADS=1 start "$WARD" gateway --config "$TMP/gateway.toml"; GW_PID=$LAST
wait_for "curl -sf http://127.0.0.1:$GWA/readyz >/dev/null"

# HAProxy doing the same: ES256 signature with the public key, alg, iss,
# aud and exp checked, a rate check keyed by sub.
HP=$(free_port)
cat > "$TMP/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 4000
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend in
  bind 127.0.0.1:$HP ssl crt $TMP/front.bundle.pem alpn h2,http/1.1 ssl-min-ver TLSv1.3
  stick-table type string len 64 size 100k expire 1m store http_req_rate(1s)
  http-request deny status 401 unless { req.hdr(authorization) -m beg "Bearer " }
  http-request set-var(txn.bearer) http_auth_bearer
  http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('\$.alg')
  http-request deny status 401 unless { var(txn.alg) -m str ES256 }
  http-request deny status 401 unless { var(txn.bearer),jwt_verify(txn.alg,"$TMP/jwt-pub.pem") -m int 1 }
  http-request deny status 401 unless { var(txn.bearer),jwt_payload_query('\$.iss') -m str $ISSUER }
  http-request deny status 401 unless { var(txn.bearer),jwt_payload_query('\$.aud') -m str bench-api }
  http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('\$.exp','int')
  http-request set-var(txn.now) date()
  http-request deny status 401 if { var(txn.exp),sub(txn.now) -m int lt 0 }
  http-request deny status 403 unless { var(txn.bearer),jwt_payload_query('\$.scope') -m sub api:read }
  http-request track-sc0 var(txn.bearer),jwt_payload_query('\$.sub')
  http-request deny status 429 if { sc_http_req_rate(0) gt 100000000 }
  default_backend app
backend app
  server app 127.0.0.1:$APP
EOF
start "$HAPROXY" -f "$TMP/haproxy.cfg"; HAP_PID=$LAST
wait_for "curl -sf --cacert $TMP/ca.pem -H 'Authorization: Bearer $TOKEN' https://127.0.0.1:$HP/1k >/dev/null"
# Both refuse a tampered token (the comparison is of like with like).
# A character well inside the signature (the last one carries padding bits,
# which HAProxy's decoder ignores and ours refuses).
bad=$(python3 -c 'import sys;t=sys.argv[1];i=len(t)-10;print(t[:i]+("A" if t[i]!="A" else "B")+t[i+1:])' "$TOKEN")
for u in "https://127.0.0.1:$GW/1k" "https://127.0.0.1:$HP/1k"; do
  c=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$TMP/ca.pem" -H "Authorization: Bearer $bad" "$u")
  [ "$c" = 401 ] || { echo "$u let a tampered token through ($c)"; exit 1; }
done

if [ "${PROFILE:-}" = 1 ]; then
  wrk -t2 -c"$CONNS" -d12s -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$GW/1k" >/dev/null &
  WRK=$!
  sleep 2
  perf record -F 499 -g -p "$GW_PID" -o "$TMP/perf.data" -- sleep 8 >/dev/null 2>&1 || true
  wait "$WRK" || true
  echo "self time, by symbol:"
  perf report -i "$TMP/perf.data" --no-children --stdio -g none --percent-limit 1 --sort symbol 2>/dev/null | grep '%' | sed 's/  */ /g' | head -25
  echo "self time, summed by library (the release build has no frame pointers: no call graph):"
  perf report -i "$TMP/perf.data" --no-children --stdio -g none --sort symbol 2>/dev/null | grep '%' | python3 -c '
import re, sys, collections
t = collections.Counter()
for line in sys.stdin:
    m = re.match(r"\s*([\d.]+)%\s+\[(.)\]\s+(.*)", line)
    if not m: continue
    pct, kind, sym = float(m.group(1)), m.group(2), m.group(3).strip()
    if kind == "k": key = "kernel"
    elif "nistz256" in sym or "ecp_" in sym or "aws_lc" in sym or sym.startswith("bn_") or "sha256" in sym.lower() or "aes" in sym.lower() or "gcm" in sym.lower(): key = "aws-lc crypto"
    elif re.search(r"malloc|free|memmove|memcpy|memset|memcmp", sym): key = "libc malloc/mem*"
    else:
        sym = re.sub(r"^<+", "", sym)
        key = re.split(r"::|<| as ", sym)[0] or sym
    t[key] += pct
for k, v in t.most_common(18): print("  %6.2f%%  %s" % (v, k))
'
  exit 0
fi

declare -A URL=(
  [direct]="http://127.0.0.1:$APP/1k"
  [ward]="https://127.0.0.1:$GW/1k"
  [haproxy]="https://127.0.0.1:$HP/1k"
)
declare -A PID_OF=([ward]=$GW_PID [haproxy]=$HAP_PID)
cat > "$TMP/report.lua" <<'LUA'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("rps=%.0f p50_ms=%.3f p99_ms=%.3f non2xx=%d sockerr=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    e.status, e.connect + e.read + e.write + e.timeout))
end
LUA
hz=$(getconf CLK_TCK)
echo
echo "throughput: wrk -t2 -c$CONNS -d${DURATION}s, keep-alive, TLS 1.3 to the fronts, one bearer token, 1 KiB responses;"
echo "cpu_us_per_req: the proxy's CPU time (user + system) during the pass, per request"
for round in $(seq "$ROUNDS"); do
  for t in direct ward haproxy; do
    cpu=""
    if [ "$t" != direct ]; then c0=$(cpu_ticks "${PID_OF[$t]}"); fi
    line=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" -s "$TMP/report.lua" -H "Authorization: Bearer $TOKEN" "${URL[$t]}" | tail -1)
    if [ "$t" != direct ]; then
      c1=$(cpu_ticks "${PID_OF[$t]}")
      rps=$(echo "$line" | sed 's/.*rps=\([0-9]*\).*/\1/')
      cpu=" cpu_us_per_req=$(echo "scale=1; ($c1 - $c0) * 1000000 / $hz / ($rps * $DURATION)" | bc)"
    fi
    echo "$t round=$round $line$cpu"
  done
done | tee "$TMP/results"
peak=$(awk '$1 == "ward" { split($3, r, "="); s += r[2]; n++ } END { printf "%d", s / n }' "$TMP/results")
half=$(( peak / 2 ))
echo
echo "latency at half of the gateway's peak ($half requests/s, open loop), each front in turn:"
for round in $(seq "$ROUNDS"); do
  for t in ward haproxy; do
    line=$(RATE_LOAD_CA="$TMP/ca.pem" RATE_LOAD_HEADER="Authorization: Bearer $TOKEN" "$LOAD" "${URL[$t]}" "$half" "$DURATION")
    echo "$t round=$round rate=$half $line rss_kib=$(rss_kib "${PID_OF[$t]}")"
  done
done
echo
awk '{ split($3, r, "="); s[$1] += r[2]; n[$1]++ }
  END { printf "gateway / haproxy throughput: %.2f   gateway / direct: %.2f\n", (s["ward"]/n["ward"]) / (s["haproxy"]/n["haproxy"]), (s["ward"]/n["ward"]) / (s["direct"]/n["direct"]) }' "$TMP/results"

# The token service.
cat > "$TMP/token.lua" <<LUA
wrk.method = "POST"
wrk.body = "grant_type=client_credentials"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic $(printf 'bench:%s' "$SECRET" | base64 -w0)"
LUA
cat "$TMP/report.lua" >> "$TMP/token.lua"
echo
echo "token service: client-credentials tokens/s (wrk -t2 -c$CONNS, HTTPS, each issuance audited before the answer), beside the raw ES256 (ECDSA P-256) signing rate on 2 threads, interleaved:"
for round in $(seq "$ROUNDS"); do
  line=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" -s "$TMP/token.lua" "$ISSUER/oauth/token" | tail -1)
  echo "tokens round=$round $line"
  echo "raw_es256 round=$round $("$RAW" 2 "$DURATION" sign)"
done
"$WARD" audit verify >/dev/null && echo "the audit chain, with every issuance of the run, verifies"
