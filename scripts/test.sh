#!/usr/bin/env bash
# The whole test suite, as CI runs it: dependencies, formatting, lints, every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo nextest run --workspace --locked --no-fail-fast --profile ci
