#!/usr/bin/env bash
# Brings up a local Meridian cloud: builds the server and runs it with its data in .data/.
# (The compute agent and the TUI join this command as they land.) Ctrl-C stops it; running it
# again reuses the data.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA="${MERIDIAN_DATA_DIR:-$PWD/.data}"
LISTEN="${MERIDIAN_LISTEN:-127.0.0.1:8774}"
URL="http://$LISTEN"

command -v cargo >/dev/null 2>&1 || { echo "cargo is required" >&2; exit 1; }
cargo build --release --locked -p meridian-server

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

cat >&2 <<MSG
Meridian is starting on $URL (data: $DATA).
  Use it from another shell:   source $DATA/openrc && openstack flavor list
  or with clouds.yaml:          OS_CLIENT_CONFIG_FILE=$DATA/clouds.yaml openstack --os-cloud meridian server list
MSG
export MERIDIAN_ADMIN_PASSWORD="$PASSWORD"
exec target/release/meridian-server serve --data-dir "$DATA" --listen "$LISTEN"
