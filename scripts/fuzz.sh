#!/usr/bin/env bash
# Runs every fuzz target (the proptest tests named `fuzz_*`: Superset and Kylin answers, the
# config file, stored records) with many more inputs than the normal test suite: a million each
# by default.
# Not for CI: a million inputs take minutes per target. A failure prints the smallest input
# that panicked; proptest keeps it in proptest-regressions/ so the next run tries it first.
#
#   scripts/fuzz.sh            # 1,000,000 inputs per target
#   scripts/fuzz.sh 20000      # a quicker pass
set -euo pipefail
cd "$(dirname "$0")/.."
PROPTEST_CASES="${1:-1000000}" cargo test --release --locked --lib fuzz_ -- --test-threads 2
