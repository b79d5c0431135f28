#!/usr/bin/env bash
# Runs every check and test rollcall has: README's second command; .ci/run calls exactly this.
#
# 1. format, lint, and every cargo test (unit, property, simulator, crash, benchmark smoke runs,
#    and tests/interleave.rs, changes landing during reads: 700 cases per property, about two
#    minutes; ROLLCALL_PROPTEST_CASES=N for a longer run), every test binary even when another
#    fails (`--no-fail-fast`), so one failure hides nothing;
# 2. the end-to-end tests against REAL Superset 6.1.0 and 5.0.0, which this script installs
#    into .venv and .venv-5.0.0 (first run: a few minutes each), starts on 127.0.0.1:18088 and
#    :18089 with fresh databases and 20-second access tokens, and stops again.
#    ROLLCALL_SKIP_REAL_SUPERSET=1 skips this part.
#
# Every phase runs even when an earlier one failed; the script fails at the end, naming them.
set -uo pipefail
cd "$(dirname "$0")/.."

failed=()
phase() {
  local name=$1; shift
  echo "== $name"
  if ! "$@"; then
    failed+=("$name")
    echo "== $name: FAILED"
  fi
}

phase format cargo fmt --all --check
phase lint cargo clippy --workspace --all-targets --locked -- -D warnings
phase tests cargo test --workspace --all-targets --locked --no-fail-fast

if [ "${ROLLCALL_SKIP_REAL_SUPERSET:-}" = 1 ]; then
  echo "== real Superset: skipped (ROLLCALL_SKIP_REAL_SUPERSET=1)"
else
  # 6.1.0, the newest, and 5.0.0, the oldest line many still run (no id filters, no
  # roles/search/): about four to five minutes each on 2 cores, the first time with the install.
  phase "real Superset 6.1.0 end to end" scripts/real-superset.sh 6.1.0 18088
  phase "real Superset 5.0.0 end to end" scripts/real-superset.sh 5.0.0 18089
fi

if [ ${#failed[@]} -gt 0 ]; then
  echo "== FAILED: ${failed[*]}"
  exit 1
fi
echo "== all checks passed"
