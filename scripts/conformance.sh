#!/usr/bin/env bash
# OpenStack conformance: tempest (pinned, unmodified, from PyPI) against a Meridian cloud that
# tests/conformance/run.py starts from the built binaries (target/debug unless --bin).
# Arguments go to run.py (--update, --regex, --concurrency, --keep …); --install-only only sets
# up the virtualenv (scripts/deps.sh does that).
set -euo pipefail
cd "$(dirname "$0")/.."

TEMPEST_VERSION="47.0.0"
VENV=.tempest-venv

if ! "$VENV/bin/tempest" --version 2>/dev/null | grep -q "$TEMPEST_VERSION"; then
    echo "[conformance] installing tempest $TEMPEST_VERSION into $VENV" >&2
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "tempest==$TEMPEST_VERSION"
fi
if [ "${1:-}" = "--install-only" ]; then exit 0; fi
exec "$VENV/bin/python" tests/conformance/run.py "$@"
