#!/usr/bin/env bash
# The test command: every unit, storage and end-to-end test. The storage
# suite also runs against PostgreSQL when WARD_TEST_POSTGRES_URL is set
# (.ci/run sets it); without it, that half is skipped with a printed reason.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v openssl >/dev/null || { echo "the end-to-end tests need openssl on PATH"; exit 1; }
command -v curl >/dev/null || { echo "the end-to-end tests need curl on PATH"; exit 1; }
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --no-fail-fast "$@"
else
  echo "cargo-nextest not found; falling back to cargo test"
  cargo test --no-fail-fast "$@"
fi
