#!/usr/bin/env bash
# Runs every check and test rollcall has: README's second command; .ci/run calls exactly this.
#
# 1. format, lint, and every cargo test (unit, property, simulator, crash, benchmark smoke runs);
# 2. the end-to-end tests against a REAL Superset 6.1.0, which this script installs into .venv
#    (first run: about two minutes), starts on 127.0.0.1:18088 with a fresh database and
#    20-second access tokens, and stops again. ROLLCALL_SKIP_REAL_SUPERSET=1 skips this part.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== format"; cargo fmt --check
echo "== lint";   cargo clippy --all-targets --locked -- -D warnings
echo "== tests";  cargo test --all-targets --locked

if [ "${ROLLCALL_SKIP_REAL_SUPERSET:-}" = 1 ]; then
  echo "== real Superset: skipped (ROLLCALL_SKIP_REAL_SUPERSET=1)"
  exit 0
fi
echo "== real Superset end to end"
export ROLLCALL_SUPERSET_DIR="$PWD/target/superset-e2e" SUPERSET_PORT=18088
export ROLLCALL_SUPERSET_URL="http://127.0.0.1:$SUPERSET_PORT" SUPERSET_JWT_EXPIRES_SECONDS=20
scripts/superset.sh stop 2> /dev/null || true
rm -rf "$ROLLCALL_SUPERSET_DIR"
trap 'scripts/superset.sh stop' EXIT
scripts/superset.sh start
cargo test --locked --test real_superset -- --ignored --test-threads=1
