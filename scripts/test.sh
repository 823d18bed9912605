#!/usr/bin/env bash
# The whole test suite, as CI runs it: dependencies, formatting, lints, every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# A tier switched off must not look like a pass: say so last, where the eye lands (under CI
# the tests themselves refuse these switches).
skipped_tiers() {
    local skipped=()
    [ "${MERIDIAN_SKIP_REAL_VM:-}" = 1 ] && skipped+=("the real-VM tier (MERIDIAN_SKIP_REAL_VM=1)")
    [ "${MERIDIAN_TEST_PG:-}" = skip ] && skipped+=("the PostgreSQL store tests (MERIDIAN_TEST_PG=skip)")
    for s in "${skipped[@]}"; do echo "SKIPPED: $s did not run" >&2; done
    return 0
}
trap skipped_tiers EXIT

scripts/deps.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo nextest run --workspace --locked --no-fail-fast --profile ci
