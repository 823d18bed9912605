#!/usr/bin/env bash
# Installs and starts a real libvirt daemon with QEMU, idempotently and without systemd, so the
# agent can run guests on qemu:///system (see ../shared/notes/libvirt-and-qemu.md for why each
# piece is here). Exits 0 once `virsh -c qemu:///system version` answers.
#
#   scripts/libvirt.sh           # install what is missing, start the daemons if they are down
#   scripts/libvirt.sh --check   # only report whether qemu:///system answers (exit 1 if not)
set -euo pipefail

log() { printf '[libvirt] %s\n' "$*" >&2; }
answers() { virsh -c qemu:///system version >/dev/null 2>&1; }

if [ "${1:-}" = "--check" ]; then
    answers
    exit
fi
if answers; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
# -sysv keeps apt from pulling in systemd; dnsmasq-utils has dhcp_release, which the agent uses
# to end a deleted port's lease; dnsmasq-base and iptables must be there before
# libvirtd starts, or its NAT networks come up without DHCP and forwarding; nftables is the
# agent's security-group enforcement (`nft`).
for p in libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-daemon-system \
    libvirt-daemon-system-sysv qemu-system-x86 dnsmasq-base dnsmasq-utils iptables nftables tini; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    $SUDO apt-get update -qq
    # confold: a qemu.conf already edited below is kept, and dpkg never stops to ask.
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}" >/dev/null
fi
# qemu-system-x86 can take qemu-utils away on this image; the agent needs qemu-img.
if ! command -v qemu-img >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends qemu-utils >/dev/null
fi

# QEMU as root: as libvirt-qemu every start re-probes QEMU (~44 s here) and cannot read state
# directories under /root or /tmp.
conf=/etc/libvirt/qemu.conf
if ! $SUDO grep -qE '^user = "root"' "$conf" 2>/dev/null; then
    log "setting user = \"root\" in $conf"
    printf 'user = "root"\ngroup = "root"\n' | $SUDO tee -a "$conf" >/dev/null
fi

if ! pgrep -x libvirtd >/dev/null 2>&1; then
    log "starting virtlogd + libvirtd (under tini, which reaps QEMU processes at once)"
    $SUDO mkdir -p /var/log/libvirt /run/libvirt
    # setsid: the daemons outlive this script and the shell that ran it.
    $SUDO setsid tini -s -- sh -c 'pgrep -x virtlogd >/dev/null || virtlogd -d; exec libvirtd' \
        >>/var/log/libvirt/daemons.out 2>&1 </dev/null &
fi
for _ in $(seq 1 100); do
    if answers; then
        log "qemu:///system is up"
        exit 0
    fi
    sleep 0.2
done
log "qemu:///system does not answer; see /var/log/libvirt/daemons.out"
exit 1
