#!/usr/bin/env bash
# Runs schemathesis against a dev server with the server's own OpenAPI
# document: no 5xx, no answer outside the documented status codes, content
# types, headers or schemas, for every operation. Three passes, each bounded
# in time: with the admin token; as a node agent (its X.509-SVID over mTLS);
# as a workload (a proxy's SVID). Left out: `POST|PUT /v1/sys/seal` (it would
# seal the server for every later request) and the vault's database
# connection writes (`database/config`, `database/rotate-root`: they connect
# to whatever address the body names, and tests stay on loopback).
#
#   scripts/api-fuzz.sh [SECONDS-PER-PASS]     (WARD=path/to/ward, SCHEMATHESIS=path/to/schemathesis)
set -euo pipefail
cd "$(dirname "$0")/.."
WARD=${WARD:-target/debug/ward}
ST=${SCHEMATHESIS:-schemathesis}
BUDGET=${1:-60}
[ -x "$WARD" ] || { echo "no ward binary at $WARD: run cargo build first"; exit 1; }
command -v "$ST" >/dev/null || [ -x "$ST" ] || { echo "schemathesis not found (pip install schemathesis==4.32.5)"; exit 1; }

TMP=$(mktemp -d)
cleanup() { [ -n "${SPID:-}" ] && kill "$SPID" 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$WARD" server --dev --trust-domain fuzz.test --data-dir "$TMP/server" --listen "127.0.0.1:$PORT" >"$TMP/server.log" 2>&1 &
SPID=$!
for _ in $(seq 150); do [ -f "$TMP/server/dev.env" ] && break; sleep 0.2; done
[ -f "$TMP/server/dev.env" ] || { echo "the dev server did not start:"; tail -5 "$TMP/server.log"; exit 1; }
set -a; . "$TMP/server/dev.env"; set +a
"$WARD" x509 mint --spiffe-id spiffe://fuzz.test/ward/agent/fuzz-node --out "$TMP/agent" >/dev/null
"$WARD" x509 mint --spiffe-id spiffe://fuzz.test/ns/fuzz/sa/proxy --out "$TMP/workload" >/dev/null

# One worker: with two, one connection can sit idle past the server's
# keep-alive limit (header_timeout) while the other long-polls, and its
# reuse races the server's close (a client-side EOF, not a server fault).
CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance
run() { # run NAME ARGS...
  local name=$1; shift
  echo "== schemathesis: $name (at most ${BUDGET}s)"
  if ! "$ST" run "$WARD_ADDR/v1/openapi.json" --tls-verify "$WARD_CACERT" --checks "$CHECKS" \
      --max-time "$BUDGET" --request-timeout 40 --workers 1 --no-color --seed 1 "$@" >"$TMP/$name.out" 2>&1; then
    cat "$TMP/$name.out"
    echo "schemathesis found failures ($name); the server log ends:"; tail -20 "$TMP/server.log"
    exit 1
  fi
  grep -E "^(API Operations|  Selected|  Tested|Test cases|  [0-9]+ generated)" "$TMP/$name.out" || true
}
run token -H "Authorization: Bearer $WARD_TOKEN" \
  --exclude-path /v1/sys/seal --exclude-path-regex '^/v1/database/(config|rotate-root)/' --exclude-tag agent --exclude-path /v1/proxy/policy --exclude-path /v1/proxy/telemetry
run agent --include-tag agent --phases examples,coverage,fuzzing \
  --request-cert "$TMP/agent/svid.pem" --request-cert-key "$TMP/agent/key.pem"
run workload --include-path /v1/proxy/policy --include-path /v1/proxy/telemetry --phases examples,coverage,fuzzing \
  --request-cert "$TMP/workload/svid.pem" --request-cert-key "$TMP/workload/key.pem"
if grep -qi "panicked" "$TMP/server.log"; then echo "the server panicked:"; grep -i -A3 panicked "$TMP/server.log"; exit 1; fi
echo "schemathesis: no failures"
