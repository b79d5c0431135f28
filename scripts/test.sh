#!/usr/bin/env bash
# Runs every check and test rollcall has. README's second command; .ci/run calls exactly this.
# Installs nothing globally: the Rust toolchain is the machine's own.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== format";  cargo fmt --check
echo "== lint";    cargo clippy --all-targets --locked -- -D warnings
echo "== tests";   cargo test --all-targets --locked
