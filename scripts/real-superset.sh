#!/usr/bin/env bash
# The end-to-end tests (tests/real_superset.rs) against one REAL Superset release: $1 is the
# release (6.1.0, 5.0.0, …), $2 the port on 127.0.0.1. The release gets its own venv and a fresh
# data directory (target/superset-e2e-<release>), 20-second access tokens (to prove token
# refresh), and is stopped again afterwards. Its metadata database is SQLite, or the one
# SUPERSET_DATABASE_URI names (scripts/e2e-postgres.sh). On 6.1.0 a test also calls a tool of
# its MCP service (`scripts/superset.sh mcp-call`, which installs the `fastmcp` extra once).
# Called by scripts/test.sh.
set -uo pipefail
cd "$(dirname "$0")/.."

export SUPERSET_VERSION=$1 SUPERSET_PORT=$2
export ROLLCALL_SUPERSET_DIR="$PWD/target/superset-e2e-$1"
export ROLLCALL_SUPERSET_URL="http://127.0.0.1:$SUPERSET_PORT" SUPERSET_JWT_EXPIRES_SECONDS=20
scripts/superset.sh stop 2> /dev/null || true
rm -rf "$ROLLCALL_SUPERSET_DIR"
trap 'scripts/superset.sh stop' EXIT
scripts/superset.sh start || exit 1
cargo test --locked --test tests real_superset:: -- --ignored --test-threads=1
