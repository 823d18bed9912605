#!/usr/bin/env bash
# One command from a fresh machine to a working local cloud, opened in the TUI.
#
#   scripts/up.sh              # install what is missing, build, run server + agent, open `meridian`
#   scripts/up.sh --headless   # only the cloud (server + agent), until Ctrl-C
#
# Data lives in .data/ (SQLite, the agent's state, credentials); running again reuses it. The
# agent uses qemu:///system (real QEMU guests) when a libvirt daemon with QEMU is there or can be
# started, else libvirt's in-memory test:///default driver (no real guests); the screen says which.
# First run seeds project `demo`, user `demo` (member), the image `meridian-guest`, network
# `demo-net` + subnet, opens ssh (tcp 22) and ICMP from anywhere in demo's default security group
# (the agent enforces groups; the default one admits only its members), and writes
# .data/clouds.yaml (entry `meridian`) and .data/openrc.
# Quitting the TUI (or Ctrl-C) stops the server and agent; guests keep running in libvirt.
set -euo pipefail
cd "$(dirname "$0")/.."

HEADLESS=0
for arg in "$@"; do
    case "$arg" in
        --headless) HEADLESS=1 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "unknown option $arg (try --help)" >&2; exit 2 ;;
    esac
done

DATA="${MERIDIAN_DATA_DIR:-$PWD/.data}"
LISTEN="${MERIDIAN_LISTEN:-127.0.0.1:8774}"
URL="http://$LISTEN"
log() { printf '[up] %s\n' "$*" >&2; }

command -v cargo >/dev/null 2>&1 || { echo "cargo is required" >&2; exit 1; }
# Everything but the libvirt daemon, whose absence is not fatal here (see below).
MERIDIAN_SKIP_REAL_VM=1 scripts/deps.sh
IMAGE_DIR="$(scripts/build-image.sh)"
URI="test:///default"
if scripts/libvirt.sh; then
    URI="qemu:///system"
else
    log "no libvirt daemon with QEMU could be started: the agent uses test:///default (no real guests)"
fi

PKGS=(-p meridian-server -p meridian-agent)
[ -f tui/Cargo.toml ] && PKGS+=(-p meridian-tui)   # the `meridian` binary
cargo build --release --locked "${PKGS[@]}"

mkdir -p "$DATA"
chmod 700 "$DATA"
umask 077
[ -s "$DATA/admin-password" ] || head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$DATA/admin-password"
[ -s "$DATA/demo-password" ] || head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$DATA/demo-password"
ADMIN_PASSWORD="$(cat "$DATA/admin-password")"
DEMO_PASSWORD="$(cat "$DATA/demo-password")"

rc() { # user password project
    cat <<RC
export OS_AUTH_URL=$URL/identity
export OS_USERNAME=$1
export OS_PASSWORD='$2'
export OS_PROJECT_NAME=$3
export OS_USER_DOMAIN_NAME=Default
export OS_PROJECT_DOMAIN_NAME=Default
export OS_IDENTITY_API_VERSION=3
export OS_REGION_NAME=RegionOne
RC
}
cloud() { # entry user password project
    cat <<YAML
  $1:
    auth:
      auth_url: $URL/identity
      username: $2
      password: '$3'
      project_name: $4
      user_domain_name: Default
      project_domain_name: Default
    identity_api_version: 3
    region_name: RegionOne
YAML
}
rc demo "$DEMO_PASSWORD" demo > "$DATA/openrc"
rc admin "$ADMIN_PASSWORD" admin > "$DATA/openrc-admin"
{ echo "clouds:"; cloud meridian demo "$DEMO_PASSWORD" demo; cloud meridian-admin admin "$ADMIN_PASSWORD" admin; } \
    > "$DATA/clouds.yaml"

SERVER=""
AGENT=""
cleanup() {
    trap - EXIT INT TERM
    [ -n "$AGENT" ] && kill "$AGENT" 2>/dev/null || true
    [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null || true
    wait 2>/dev/null || true
    log "stopped the server and the agent"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if curl -fsS "$URL/" >/dev/null 2>&1; then
    echo "something already answers on $URL; stop it or set MERIDIAN_LISTEN" >&2
    exit 1
fi
MERIDIAN_ADMIN_PASSWORD="$ADMIN_PASSWORD" MERIDIAN_LOG="${MERIDIAN_LOG:-warn}" \
    target/release/meridian-server serve --data-dir "$DATA" --listen "$LISTEN" 2>>"$DATA/server.log" &
SERVER=$!
for _ in $(seq 1 200); do
    [ -s "$DATA/agent-token" ] && curl -fsS "$URL/" >/dev/null 2>&1 && break
    kill -0 "$SERVER" 2>/dev/null || { echo "the server exited; see $DATA/server.log" >&2; exit 1; }
    sleep 0.1
done
MERIDIAN_AGENT_TOKEN="$(cat "$DATA/agent-token")" MERIDIAN_AGENT_LOG="${MERIDIAN_AGENT_LOG:-warn}" \
    target/release/meridian-agent --server "$URL" --host "$(hostname)" --libvirt-uri "$URI" \
    --state-dir "$DATA/agent" --metrics-listen "${MERIDIAN_AGENT_METRICS_LISTEN:-127.0.0.1:9180}" \
    2>>"$DATA/agent.log" &
AGENT=$!

python3 scripts/seed.py "$URL" "$ADMIN_PASSWORD" "$DEMO_PASSWORD" "$IMAGE_DIR/disk.qcow2"

cat >&2 <<MSG

Meridian is running on $URL (data: $DATA; logs: server.log, agent.log).
  compute agent: $URI$([ "$URI" = "test:///default" ] && echo " (simulated: no real guests)")
  demo login:    project demo, user demo, password in $DATA/demo-password
  CLI:           source $DATA/openrc && .venv/bin/openstack server create --flavor m1.tiny \\
                     --image meridian-guest --network demo-net --wait vm1
  security:      demo's default security group lets in ssh (tcp 22) and ICMP from anywhere (IPv4),
                 and its own members; anything else needs a rule (openstack security group rule create)
  clouds.yaml:   OS_CLIENT_CONFIG_FILE=$DATA/clouds.yaml, entries meridian (demo) and meridian-admin
  metrics:       $URL/metrics (server), http://${MERIDIAN_AGENT_METRICS_LISTEN:-127.0.0.1:9180}/metrics (agent)
MSG

export OS_CLIENT_CONFIG_FILE="$DATA/clouds.yaml"
if [ "$HEADLESS" = 0 ] && [ -x target/release/meridian ]; then
    target/release/meridian --os-cloud meridian
else
    if [ "$HEADLESS" = 0 ]; then
        log "the TUI (target/release/meridian) is not built here; connect from elsewhere with the clouds.yaml above"
    fi
    echo "Ctrl-C stops the server and the agent." >&2
    wait "$SERVER"
fi
