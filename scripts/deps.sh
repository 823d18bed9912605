#!/usr/bin/env bash
# Installs what Meridian's build and tests need on a fresh Debian machine, idempotently:
# system packages, a running PostgreSQL, a running libvirt daemon with QEMU (scripts/libvirt.sh),
# the guest image (scripts/build-image.sh), the python-openstackclient virtualenv (.venv) and
# tempest's (.tempest-venv, scripts/conformance.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

OSC_VERSION="10.5.0"   # python-openstackclient the compatibility tests are pinned to

log() { printf '[deps] %s\n' "$*" >&2; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
need() { dpkg -s "$1" >/dev/null 2>&1 || missing+=("$1"); }
need curl
need ca-certificates
need postgresql-client
need procps
# meridian-agent: the virt crate links libvirt (found through pkg-config; its test:///default
# driver, used by the tests, is inside libvirt0 itself, no daemon needed); instance disks are
# qcow2 overlays made by qemu-img.
need libvirt-dev
need pkg-config
need qemu-utils
# The agent's security groups (nft), and the firewall tests' network namespaces (iproute2).
need nftables
need iproute2
# A flavor's ephemeral disk (mkfs.ext4) and swap disk (mkswap).
need e2fsprogs
need util-linux
# Config drives (iso9660 by genisoimage, which also brings isoinfo for the tests; vfat by
# dosfstools + mtools) and the guest image (SYSLINUX on a FAT partition made without mounts).
need genisoimage
need dosfstools
need mtools
need fdisk
need syslinux
need syslinux-common
# The TUI's end-to-end test drives it inside tmux.
need tmux
# Remote consoles: the server serves noVNC's page from /usr/share/novnc; the console test opens
# it in headless chromium.
need novnc
need chromium
command -v python3 >/dev/null 2>&1 || need python3
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need python3-venv
command -v pg_ctlcluster >/dev/null 2>&1 || need postgresql
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}" >/dev/null
fi

# The real-VM tests run guests on qemu:///system: the daemon must be up (CI starts it here).
# MERIDIAN_SKIP_REAL_VM=1 leaves it out (those tests then skip; up.sh starts it itself if it can).
if [ "${MERIDIAN_SKIP_REAL_VM:-}" != 1 ]; then
    scripts/libvirt.sh
fi
# Built once (cached by the script's hash); apt-get download needs the package lists.
if ! scripts/build-image.sh >/dev/null 2>&1; then
    $SUDO apt-get update -qq
    scripts/build-image.sh >/dev/null
fi

# PostgreSQL for the store and durability tests (the project's machines start it; a bare one may not).
if [ -z "${MERIDIAN_TEST_PG_URL:-}" ] && ! pg_isready -q -h 127.0.0.1 -p 5432; then
    log "starting PostgreSQL"
    for v in $(ls /etc/postgresql 2>/dev/null); do
        $SUDO pg_ctlcluster --skip-systemctl-redirect "$v" main start || true
    done
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
    if ! psql -h 127.0.0.1 -U postgres -c 'select 1' postgres >/dev/null 2>&1; then
        # Fresh install: allow local trust auth for the tests' postgres user over loopback.
        for hba in /etc/postgresql/*/main/pg_hba.conf; do
            grep -q 'meridian-tests' "$hba" || $SUDO sed -i '1i host all postgres 127.0.0.1/32 trust # meridian-tests' "$hba"
        done
        for v in $(ls /etc/postgresql); do $SUDO pg_ctlcluster --skip-systemctl-redirect "$v" main reload || true; done
        sleep 1
    fi
fi

# The unmodified openstack CLI, from PyPI, in a project-local virtualenv.
if ! .venv/bin/openstack --version >/dev/null 2>&1; then
    log "creating .venv with python-openstackclient $OSC_VERSION"
    rm -rf .venv
    python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check "python-openstackclient==$OSC_VERSION"
fi

# tempest, pinned, in its own virtualenv (.tempest-venv) for the conformance tier.
scripts/conformance.sh --install-only

command -v cargo >/dev/null 2>&1 || { log "cargo is required (the machine image provides a Rust toolchain)"; exit 1; }
if ! cargo nextest --version >/dev/null 2>&1; then
    log "installing cargo-nextest"
    cargo install --locked cargo-nextest
fi
