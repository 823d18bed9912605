#!/usr/bin/env bash
# Brings up a local Meridian cloud: builds, then runs the server and one compute agent with
# their data in .data/. The agent uses qemu:///system when a libvirt daemon answers, else
# libvirt's in-memory test:///default driver (no real VMs). Ctrl-C stops both; running it again
# reuses the data. (The TUI joins this command when it lands.)
set -euo pipefail
cd "$(dirname "$0")/.."

DATA="${MERIDIAN_DATA_DIR:-$PWD/.data}"
LISTEN="${MERIDIAN_LISTEN:-127.0.0.1:8774}"
URL="http://$LISTEN"

command -v cargo >/dev/null 2>&1 || { echo "cargo is required" >&2; exit 1; }
scripts/deps.sh
cargo build --release --locked -p meridian-server -p meridian-agent

mkdir -p "$DATA"
chmod 700 "$DATA"
if [ ! -s "$DATA/admin-password" ]; then
    umask 077
    head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$DATA/admin-password"
fi
PASSWORD="$(cat "$DATA/admin-password")"

umask 077
cat > "$DATA/openrc" <<RC
export OS_AUTH_URL=$URL/identity
export OS_USERNAME=admin
export OS_PASSWORD='$PASSWORD'
export OS_PROJECT_NAME=admin
export OS_USER_DOMAIN_NAME=Default
export OS_PROJECT_DOMAIN_NAME=Default
export OS_IDENTITY_API_VERSION=3
export OS_REGION_NAME=RegionOne
RC
cat > "$DATA/clouds.yaml" <<YAML
clouds:
  meridian:
    auth:
      auth_url: $URL/identity
      username: admin
      password: '$PASSWORD'
      project_name: admin
      user_domain_name: Default
      project_domain_name: Default
    identity_api_version: 3
    region_name: RegionOne
YAML

export MERIDIAN_ADMIN_PASSWORD="$PASSWORD"
target/release/meridian-server serve --data-dir "$DATA" --listen "$LISTEN" &
SERVER=$!
AGENT=""
cleanup() {
    [ -n "$AGENT" ] && kill "$AGENT" 2>/dev/null || true
    kill "$SERVER" 2>/dev/null || true
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

for _ in $(seq 1 100); do
    [ -s "$DATA/agent-token" ] && curl -fsS "$URL/" >/dev/null 2>&1 && break
    sleep 0.1
done
URI="test:///default"
if command -v virsh >/dev/null 2>&1 && virsh -c qemu:///system version >/dev/null 2>&1; then
    URI="qemu:///system"
fi
MERIDIAN_AGENT_TOKEN="$(cat "$DATA/agent-token")" target/release/meridian-agent \
    --server "$URL" --host "$(hostname)" --libvirt-uri "$URI" --state-dir "$DATA/agent" &
AGENT=$!

cat >&2 <<MSG

Meridian is running on $URL (data: $DATA), compute agent on $URI.
  From another shell:  source $DATA/openrc && .venv/bin/openstack server list
  or with clouds.yaml: OS_CLIENT_CONFIG_FILE=$DATA/clouds.yaml .venv/bin/openstack --os-cloud meridian server list
Ctrl-C stops both.
MSG
wait "$SERVER"
