#!/usr/bin/env bash
# The sidecar benchmark (run through scripts/bench.sh proxy|policy).
# proxy: one nginx app serving a 1 KiB file; the same load against it
#   directly, through a Ward proxy pair (client-side outbound -> server-side
#   inbound, mTLS, Cedar authorization on), an HAProxy mTLS pair and an nginx
#   mTLS pair. Every proxy gets one core (WARD_THREADS=1, nbthread 1, one
#   worker). ECDSA P-256, TLS 1.3, client certificates required, keep-alive
#   on both hops. Passes interleaved (direct, ward, haproxy, nginx) x ROUNDS;
#   then latency at a fixed rate and RSS/CPU per proxy.
# policy: criterion + percentiles for a Cedar decision with 1,000 policies.
# Env: DURATION (s per pass, default 8), CONNS (default 32), ROUNDS (default 2), RATE (default 1000),
#      HOLD=SECONDS keeps the setup up that long instead of measuring (for profiling),
#      WARD_PROXY_THREADS (worker threads per Ward proxy; default 1, as the baselines get one each).
set -euo pipefail
cd "$(dirname "$0")/.."
what=$1
if [ "$what" = policy ]; then
  exec cargo bench -p ward-benches --bench policy -- --warm-up-time 1 --measurement-time 3
fi
DURATION=${DURATION:-8}
CONNS=${CONNS:-32}
ROUNDS=${ROUNDS:-2}
RATE=${RATE:-1000}
need=()
for p in wrk haproxy nginx; do command -v "$p" >/dev/null || [ -x "/usr/sbin/$p" ] || need+=("$p"); done
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

TMP=$(mktemp -d /tmp/ward-bench-proxy.XXXXXX)
chmod 755 "$TMP" # nginx workers (nobody) read files here
cleanup() {
  for g in ${GROUPS_STARTED:-}; do kill -- -"$g" 2>/dev/null || true; done
  sleep 0.3
  for g in ${GROUPS_STARTED:-}; do kill -9 -- -"$g" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
GROUPS_STARTED=""
# Starts a daemon in its own process group; remembers the group to stop it.
start() { setsid "$@" & GROUPS_STARTED="$GROUPS_STARTED $!"; LAST=$!; }
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 150); do eval "$1" && return 0; sleep 0.2; done; echo "timed out: $1"; exit 1; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
pid_on_port() { ss -ltnpH "sport = :$1" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2; }

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

# Certificates for the HAProxy and nginx pairs: a CA, a server certificate
# with a DNS name (nginx checks host names) and a client certificate.
cd "$TMP"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=bench-ca 2>/dev/null
for who in server client; do
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout $who.key -out $who.csr -subj /CN=$who 2>/dev/null
  printf 'subjectAltName=DNS:upstream.test\nextendedKeyUsage=%s\n' "$([ $who = server ] && echo serverAuth || echo clientAuth)" > $who.ext
  openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile $who.ext -out $who.pem 2>/dev/null
  cat $who.pem $who.key > $who.bundle.pem
done
cd - >/dev/null

# HAProxy pair.
HS=$(free_port); HC=$(free_port)
cat > "$TMP/hap-server.cfg" <<EOF
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
  bind 127.0.0.1:$HS ssl crt $TMP/server.bundle.pem ca-file $TMP/ca.pem verify required ssl-min-ver TLSv1.3
  default_backend app
backend app
  server app 127.0.0.1:$APP
EOF
cat > "$TMP/hap-client.cfg" <<EOF
global
  nbthread 1
  maxconn 4000
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend out
  bind 127.0.0.1:$HC
  default_backend upstream
backend upstream
  server up 127.0.0.1:$HS ssl crt $TMP/client.bundle.pem ca-file $TMP/ca.pem verify required verifyhost upstream.test sni str(upstream.test) ssl-min-ver TLSv1.3
EOF
start "$HAPROXY" -f "$TMP/hap-server.cfg"; HAP_S=$LAST
start "$HAPROXY" -f "$TMP/hap-client.cfg"; HAP_C=$LAST

# nginx pair, one worker each.
NS=$(free_port); NC=$(free_port)
cat > "$TMP/ng-server.conf" <<EOF
daemon off; worker_processes 1; pid $TMP/ngs.pid; error_log $TMP/logs/ngs.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream app { server 127.0.0.1:$APP; keepalive 64; }
  server { listen 127.0.0.1:$NS ssl; ssl_protocols TLSv1.3;
    ssl_certificate $TMP/server.pem; ssl_certificate_key $TMP/server.key;
    ssl_client_certificate $TMP/ca.pem; ssl_verify_client on;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
EOF
cat > "$TMP/ng-client.conf" <<EOF
daemon off; worker_processes 1; pid $TMP/ngc.pid; error_log $TMP/logs/ngc.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream up { server 127.0.0.1:$NS; keepalive 64; }
  server { listen 127.0.0.1:$NC;
    location / { proxy_pass https://up; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_ssl_certificate $TMP/client.pem; proxy_ssl_certificate_key $TMP/client.key;
      proxy_ssl_trusted_certificate $TMP/ca.pem; proxy_ssl_verify on; proxy_ssl_name upstream.test;
      proxy_ssl_server_name on; proxy_ssl_protocols TLSv1.3; proxy_ssl_session_reuse off; } } }
EOF
start "$NGINX" -c "$TMP/ng-server.conf" -p "$TMP"; NG_S=$LAST
start "$NGINX" -c "$TMP/ng-client.conf" -p "$TMP"; NG_C=$LAST

# Ward pair: SVIDs from a dev server, policy from a file (client may read).
start "$WARD" server --dev --data-dir "$TMP/server" --listen 127.0.0.1:0 --trust-domain bench.test
wait_for "[ -s $TMP/server/dev.env ]"
set -a; . "$TMP/server/dev.env"; set +a
"$WARD" x509 mint --spiffe-id spiffe://bench.test/ns/bench/sa/client --out "$TMP/wc" --ttl 2h >/dev/null
"$WARD" x509 mint --spiffe-id spiffe://bench.test/ns/bench/sa/server --out "$TMP/ws" --ttl 2h >/dev/null
cat > "$TMP/policy.cedar" <<EOF
permit(principal == Ward::Service::"spiffe://bench.test/ns/bench/sa/client", action in Ward::Action::"read",
       resource in Ward::Service::"spiffe://bench.test/ns/bench/sa/server");
EOF
WS=$(free_port); WC=$(free_port); WSA=$(free_port); WCA=$(free_port)
cat > "$TMP/ward-server.toml" <<EOF
[identity]
svid = "$TMP/ws/svid.pem"
key = "$TMP/ws/key.pem"
bundle = "$TMP/ws/bundle.pem"
[policy]
file = "$TMP/policy.cedar"
[admin]
listen = "127.0.0.1:$WSA"
[[inbound]]
name = "http"
listen = "127.0.0.1:$WS"
app = "127.0.0.1:$APP"
protocol = "http"
EOF
cat > "$TMP/ward-client.toml" <<EOF
[identity]
svid = "$TMP/wc/svid.pem"
key = "$TMP/wc/key.pem"
bundle = "$TMP/wc/bundle.pem"
[policy]
file = "$TMP/policy.cedar"
[admin]
listen = "127.0.0.1:$WCA"
[[outbound]]
name = "server"
listen = "127.0.0.1:$WC"
upstream = "127.0.0.1:$WS"
spiffe_ids = ["spiffe://bench.test/ns/bench/sa/server"]
protocol = "http"
EOF
WARD_THREADS=${WARD_PROXY_THREADS:-1} WARD_LOG=warn start "$WARD" proxy --config "$TMP/ward-server.toml"; WARD_S=$LAST
WARD_THREADS=${WARD_PROXY_THREADS:-1} WARD_LOG=warn start "$WARD" proxy --config "$TMP/ward-client.toml"; WARD_C=$LAST

declare -A URL=(
  [direct]="http://127.0.0.1:$APP/1k"
  [ward]="http://127.0.0.1:$WC/1k"
  [haproxy]="http://127.0.0.1:$HC/1k"
  [nginx]="http://127.0.0.1:$NC/1k"
)
for t in direct ward haproxy nginx; do
  wait_for "[ \"\$(curl -s -o /dev/null -w '%{http_code}' ${URL[$t]})\" = 200 ]"
  size=$(curl -s "${URL[$t]}" | wc -c)
  [ "$size" = 1024 ] || { echo "$t answered $size bytes, not 1024"; exit 1; }
done
wait_for "curl -sf http://127.0.0.1:$WSA/readyz >/dev/null"
# The processes that serve each side (setsid made each the group leader).
declare -A PIDS_OF=(
  [ward]="$WARD_C $WARD_S"
  [haproxy]="$HAP_C $HAP_S"
  [nginx]="$(pgrep -P $NG_C | head -1) $(pgrep -P $NG_S | head -1)"
)
echo "idle RSS (KiB), client side / server side:"
for t in ward haproxy nginx; do
  set -- ${PIDS_OF[$t]}; echo "  $t: $(rss_kib $1) / $(rss_kib $2)"
done

if [ -n "${HOLD:-}" ]; then
  # For profiling: keep everything up and say where it is.
  echo "HOLD: ward client $WARD_C server $WARD_S; urls: direct=${URL[direct]} ward=${URL[ward]} haproxy=${URL[haproxy]} nginx=${URL[nginx]}"
  sleep "$HOLD"; exit 0
fi
cat > "$TMP/report.lua" <<'LUA'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("rps=%.0f p50_ms=%.3f p99_ms=%.3f non2xx=%d sockerr=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    e.status, e.connect + e.read + e.write + e.timeout))
end
LUA
echo
echo "throughput: wrk -t2 -c$CONNS -d${DURATION}s, keep-alive, 1 KiB responses, $(nproc) cores shared with wrk;"
echo "cpu_us_per_req: CPU time (user + system) of both proxies of the pair during the pass, per request"
hz=$(getconf CLK_TCK)
for round in $(seq "$ROUNDS"); do
  for t in direct ward haproxy nginx; do
    if [ "$t" != direct ]; then set -- ${PIDS_OF[$t]}; c0=$(( $(cpu_ticks $1) + $(cpu_ticks $2) )); fi
    line=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" -s "$TMP/report.lua" "${URL[$t]}" | tail -1)
    cpu=""
    if [ "$t" != direct ]; then
      c1=$(( $(cpu_ticks $1) + $(cpu_ticks $2) ))
      rps=$(echo "$line" | sed 's/.*rps=\([0-9]*\).*/\1/')
      cpu=" cpu_us_per_req=$(echo "scale=1; ($c1 - $c0) * 1000000 / $hz / ($rps * $DURATION)" | bc)"
    fi
    echo "$t round=$round $line$cpu"
  done
done | tee "$TMP/results"

echo
echo "latency at a fixed $RATE requests/s (open loop), and proxy CPU at that rate:"
for round in $(seq "$ROUNDS"); do
  for t in direct ward haproxy nginx; do
    if [ "$t" != direct ]; then set -- ${PIDS_OF[$t]}; c0=$(( $(cpu_ticks $1) + $(cpu_ticks $2) )); fi
    line=$("$LOAD" "${URL[$t]}" "$RATE" "$DURATION")
    cpu=""
    if [ "$t" != direct ]; then
      c1=$(( $(cpu_ticks $1) + $(cpu_ticks $2) ))
      cpu=$(echo "scale=1; 100 * ($c1 - $c0) / $hz / $DURATION" | bc)
      cpu=" pair_cpu_pct=$cpu rss_kib=$(rss_kib $1)/$(rss_kib $2)"
    fi
    echo "$t round=$round $line$cpu"
  done
done | tee "$TMP/latency"

echo
awk '
  { split($2, r, "="); for (i = 3; i <= NF; i++) { split($i, kv, "="); v[$1, kv[1]] += kv[2]; n[$1, kv[1]]++ } }
  END {
    printf "mean over rounds          rps      p50 ms   p99 ms\n"
    split("direct ward haproxy nginx", t, " ")
    for (k = 1; k <= 4; k++) printf "  %-10s %10.0f %10.3f %8.3f\n", t[k], v[t[k],"rps"]/n[t[k],"rps"], v[t[k],"p50_ms"]/n[t[k],"p50_ms"], v[t[k],"p99_ms"]/n[t[k],"p99_ms"]
    printf "ward / haproxy throughput: %.2f   ward / nginx: %.2f\n", v["ward","rps"]/v["haproxy","rps"], v["ward","rps"]/v["nginx","rps"]
    printf "pair CPU per request (us): ward %.1f  haproxy %.1f  nginx %.1f   ward / haproxy: %.2f\n",
      v["ward","cpu_us_per_req"]/n["ward","cpu_us_per_req"], v["haproxy","cpu_us_per_req"]/n["haproxy","cpu_us_per_req"],
      v["nginx","cpu_us_per_req"]/n["nginx","cpu_us_per_req"], v["ward","cpu_us_per_req"]/v["haproxy","cpu_us_per_req"]
  }' "$TMP/results"
awk '
  { for (i = 3; i <= NF; i++) { split($i, kv, "="); v[$1, kv[1]] += kv[2]; n[$1, kv[1]]++ } }
  END {
    split("ward haproxy nginx", t, " ")
    for (k = 1; k <= 3; k++) printf "added latency at fixed rate, %-8s p50 %+.0f us, p99 %+.0f us\n", t[k],
      v[t[k],"p50_us"]/n[t[k],"p50_us"] - v["direct","p50_us"]/n["direct","p50_us"],
      v[t[k],"p99_us"]/n[t[k],"p99_us"] - v["direct","p99_us"]/n["direct","p99_us"]
  }' "$TMP/latency"
if grep -q 'non2xx=[1-9]\|sockerr=[1-9]\|errors=[1-9]' "$TMP/results" "$TMP/latency"; then
  echo "FAILED PASSES: some requests were not 200"; exit 1
fi
