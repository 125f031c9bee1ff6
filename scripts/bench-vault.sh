#!/usr/bin/env bash
# The vault under load, against the real release binary (run by `scripts/bench.sh vault`).
# Per backend (SQLite dev server, PostgreSQL configured server), interleaved over ROUNDS rounds:
#   raw store      durable writes/s and reads/s of the store alone (benches/src/bin/vault-store.rs)
#   KV reads       closed loop, CONNS connections, admin token and a workload token (Cedar decided)
#   KV writes      closed loop, each a new secret acknowledged only once durable (with its audit record)
#   read p99       open loop at 500 requests/s
#   transit        encrypt ops/s, closed loop
#   db creds p99   dynamic PostgreSQL credentials at 20/s (each a CREATE ROLE), open loop
# Env: DURATION (s per pass, default 8), CONNS (default 32), ROUNDS (default 2),
#      WARD_BENCH_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/test).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-8}
CONNS=${CONNS:-32}
ROUNDS=${ROUNDS:-2}
PG_URL=${WARD_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
echo "building release binaries..."
cargo build --release -q -p ward -p ward-benches
WARD=$PWD/target/release/ward
LOAD=$PWD/target/release/vault-load
RAW=$PWD/target/release/vault-store

TMP=$(mktemp -d /tmp/ward-bench-vault.XXXXXX)
DB=ward_bench_vault_$$
PIDS=""
cleanup() {
  [ -n "$PIDS" ] && kill $PIDS 2>/dev/null || true
  sleep 0.3
  for d in "$DB" "${DB}_raw"; do psql -q "$PG_URL" -c "DROP DATABASE IF EXISTS $d WITH (FORCE)" >/dev/null 2>&1 || true; done
  psql -q "$PG_URL" -Atc "SELECT rolname FROM pg_roles WHERE rolname LIKE 'v-bench%'" 2>/dev/null |
    while read -r r; do psql -q "$PG_URL" -c "DROP ROLE IF EXISTS \"$r\"" >/dev/null 2>&1 || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 150); do eval "$1" && return 0; sleep 0.2; done; echo "timed out: $1"; exit 1; }

# SQLite: a dev server.
"$WARD" server --dev --data-dir "$TMP/sqlite" --listen 127.0.0.1:0 --trust-domain bench.test 2>"$TMP/sqlite.log" &
PIDS="$PIDS $!"
wait_for "[ -s $TMP/sqlite/dev.env ]"
( . "$TMP/sqlite/dev.env"; echo "$WARD_ADDR $WARD_TOKEN $WARD_CACERT" ) > "$TMP/sqlite.addr"

# PostgreSQL: a configured server on a fresh database.
psql -q "$PG_URL" -c "CREATE DATABASE $DB" >/dev/null
psql -q "$PG_URL" -c "CREATE DATABASE ${DB}_raw" >/dev/null
port=$(free_port)
cat > "$TMP/pg.toml" <<TOML
trust_domain = "bench.test"
listen = "127.0.0.1:$port"
data_dir = "$TMP/pg"
storage = "${PG_URL%/*}/$DB"
[seal]
shares = 1
threshold = 1
TOML
"$WARD" server init --config "$TMP/pg.toml" --output json > "$TMP/pg.init"
"$WARD" server --config "$TMP/pg.toml" 2>"$TMP/pg.log" &
PIDS="$PIDS $!"
cacert=$(jq -r .cacert "$TMP/pg.init"); token=$(jq -r .admin_token "$TMP/pg.init")
wait_for "curl -s --cacert $cacert https://127.0.0.1:$port/v1/sys/seal-status >/dev/null"
jq -r '.unseal_shares[0]' "$TMP/pg.init" | WARD_ADDR=https://127.0.0.1:$port WARD_CACERT=$cacert "$WARD" operator unseal >/dev/null
echo "https://127.0.0.1:$port $token $cacert" > "$TMP/pg.addr"

# Each backend: a secret to read, a transit key, a database role, and a
# workload token for a service granted that secret.
for b in sqlite pg; do
  read -r addr tok ca < "$TMP/$b.addr"
  c() { curl -sf --cacert "$ca" -H "X-Vault-Token: $tok" "$@"; }
  c -X POST -d '{"data":{"password":"bench-value","user":"bench"}}' "$addr/v1/secret/data/bench/r" >/dev/null
  c -X POST -d '{"type":"aes256-gcm96"}' "$addr/v1/transit/keys/bench" >/dev/null
  c -X POST -d "{\"plugin_name\":\"postgresql\",\"connection_url\":\"$PG_URL\",\"allowed_roles\":[\"bench\"]}" "$addr/v1/database/config/pg" >/dev/null
  c -X POST -d '{"db_name":"pg","default_ttl":"10m"}' "$addr/v1/database/roles/bench" >/dev/null
  c -X PUT -d '{"policy":"permit(principal == Ward::Service::\"spiffe://bench.test/ns/bench/sa/app\", action == Vault::Action::\"read\", resource) when { resource.path like \"secret/data/bench/*\" };"}' "$addr/v1/sys/policies/cedar/bench" >/dev/null
  jwt=$(WARD_ADDR=$addr WARD_TOKEN=$tok WARD_CACERT=$ca "$WARD" jwt mint --spiffe-id spiffe://bench.test/ns/bench/sa/app --audience vault --ttl 30m | tail -1)
  curl -sf --cacert "$ca" -d "{\"jwt\":\"$jwt\"}" "$addr/v1/auth/jwt/login" | jq -r .auth.client_token > "$TMP/$b.wtoken"
  # Every target answers 2xx before anything is measured.
  c "$addr/v1/secret/data/bench/r" >/dev/null
  curl -sf --cacert "$ca" -H "X-Vault-Token: $(cat "$TMP/$b.wtoken")" "$addr/v1/secret/data/bench/r" >/dev/null
done

echo "vault benchmark: ${DURATION}s passes, $CONNS connections, $ROUNDS rounds, 2 cores shared with the load generator"
for round in $(seq "$ROUNDS"); do
  echo "== round $round"
  for b in sqlite pg; do
    read -r addr tok ca < "$TMP/$b.addr"
    wtok=$(cat "$TMP/$b.wtoken")
    if [ $b = sqlite ]; then raw_url="sqlite://$TMP/raw-$round.db"; else raw_url="${PG_URL%/*}/${DB}_raw"; fi
    echo "-- $b"
    echo "  $($RAW "$raw_url" "$CONNS" "$DURATION")"
    echo "  KV read, admin token:      $($LOAD closed "$addr" "$tok" "$ca" "$CONNS" "$DURATION" read bench/r)"
    echo "  KV read, workload token:   $($LOAD closed "$addr" "$wtok" "$ca" "$CONNS" "$DURATION" read bench/r)"
    echo "  KV write (durable):        $($LOAD closed "$addr" "$tok" "$ca" "$CONNS" "$DURATION" write)"
    echo "  KV read at 500 rps:        $($LOAD open "$addr" "$tok" "$ca" 500 "$DURATION" read bench/r)"
    echo "  transit encrypt:           $($LOAD closed "$addr" "$tok" "$ca" "$CONNS" "$DURATION" encrypt bench)"
    echo "  db creds at 20/s:          $($LOAD open "$addr" "$tok" "$ca" 20 "$DURATION" creds bench)"
  done
done
