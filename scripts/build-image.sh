#!/usr/bin/env bash
# Builds Meridian's small guest image offline, from Debian packages only, and caches it.
#
#   scripts/build-image.sh      # prints the directory holding the result
#
# The directory (keyed by this script's hash, so editing the script rebuilds) holds:
#   disk.qcow2   a bootable disk: MBR + one FAT partition with SYSLINUX, the kernel and the
#                initramfs. It boots under SeaBIOS like any cloud image.
#   vmlinuz      the same kernel and initramfs, for images booted by kernel_id/ramdisk_id
#   initrd.img
#
# The guest is busybox in an initramfs (the disk is only read at boot). It loads the virtio,
# ACPI button and filesystem modules, mounts a config drive labelled `config-2` if there is one
# (hostname from meta_data.json, user_data run when it starts with `#!`), configures eth0 by
# DHCP, reads the metadata service when there is no config drive, and prints on ttyS0, in a
# stable format:
#   meridian-guest: boot cmdline=...        (the kernel command line: tells the boot path)
#   meridian-guest: config-drive=DEV uuid=UUID   (or config-drive=none)
#   meridian-guest: hostname=NAME
#   meridian-guest: ip=A.B.C.D uptime=S   (or ip=none when DHCP got nothing, after a line
#                   `dhcp: no lease on eth0` or `dhcp: no eth0 (interfaces: ...)` saying why)
#   meridian-guest: metadata hostname=NAME keys=N user_data=FIRST-LINE   (no config drive: read
#                   from http://169.254.169.254; `metadata none` when it did not answer)
#   meridian-guest: metadata forged-xff=ADDR uuid=UUID   (with the metadata key probe_xff)
#   meridian-guest: smbios manufacturer=... product=... serial=...   (the DMI system strings)
#   (user_data's output, then) meridian-guest: user-data exit=N
#   meridian-guest: ssh=dropbear keys=N   (N: public keys from meta_data.json for root)
#   meridian-guest: ready hostname=NAME ip=A.B.C.D uptime=SECONDS
# then a getty with a login banner. An SSH server (dropbear, from Debian's dropbear-bin with its
# shared libraries) listens on port 22 for root with the config drive's public keys only (no
# passwords); its host keys are made at first boot (`dropbear -R`). busybox httpd answers on TCP
# port 8080 with `meridian-guest NAME` (what the security group tests try to reach). The ACPI power button powers it off (so libvirt's
# shutdown and soft reboot work); `reboot` in the guest reboots.
#
# Needs: apt-get (with package lists), dpkg, mkfs.vfat, mcopy, syslinux, sfdisk, qemu-img, gzip.
# Nothing is mounted; no root needed beyond what apt-get download needs.
set -euo pipefail

SCRIPT="$(readlink -f "$0")"
CACHE="${MERIDIAN_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meridian/images}"
KEY="$(sha256sum "$SCRIPT" | cut -c1-16)"
OUT="$CACHE/$KEY"

log() { printf '[build-image] %s\n' "$*" >&2; }

if [ -s "$OUT/disk.qcow2" ] && [ -s "$OUT/vmlinuz" ] && [ -s "$OUT/initrd.img" ]; then
    echo "$OUT"
    exit 0
fi

mkdir -p "$CACHE"
# Parallel test processes may all ask for the image: one builds, the others wait for it.
exec 9>"$CACHE/.lock"
flock 9
if [ -s "$OUT/disk.qcow2" ]; then
    echo "$OUT"
    exit 0
fi

for tool in apt-get dpkg mkfs.vfat mcopy syslinux sfdisk qemu-img gzip; do
    command -v "$tool" >/dev/null 2>&1 || { log "missing $tool (scripts/deps.sh installs it)"; exit 1; }
done
MBR=/usr/lib/syslinux/mbr/mbr.bin
LDLINUX_C32=/usr/lib/syslinux/modules/bios/ldlinux.c32
[ -r "$MBR" ] && [ -r "$LDLINUX_C32" ] || { log "missing syslinux-common's $MBR / $LDLINUX_C32"; exit 1; }

WORK="$(mktemp -d "$CACHE/.build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

# --- packages -------------------------------------------------------------------------------
KPKG="$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')"
[ -n "$KPKG" ] || { log "apt does not know linux-image-cloud-amd64 (run apt-get update)"; exit 1; }
# dropbear-bin is dynamically linked: its libraries come from their own packages.
SSHPKGS="dropbear-bin libtomcrypt1 libtommath1 libgmp10 zlib1g libcrypt1 libc6"
log "downloading $KPKG, busybox-static and $SSHPKGS"
mkdir debs
# shellcheck disable=SC2086
(cd debs && apt-get download -qq "$KPKG" busybox-static $SSHPKGS 2>/dev/null) ||
    (cd debs && apt-get download "$KPKG" busybox-static $SSHPKGS)
dpkg -x debs/"${KPKG}"_*.deb kernel
dpkg -x debs/busybox-static_*.deb busybox
for p in $SSHPKGS; do dpkg -x debs/"${p}"_*.deb ssh; done
KVER="$(ls kernel/lib/modules)"
BB=busybox/bin/busybox

# --- initramfs ------------------------------------------------------------------------------
R=root
mkdir -p $R/bin $R/sbin $R/etc/acpi/PWRF $R/proc $R/sys $R/dev $R/run $R/tmp $R/mnt/config \
    $R/root $R/lib/modules/"$KVER" $R/usr/share/udhcpc $R/var/run
cp $BB $R/bin/busybox
for applet in $($BB --list); do
    [ "$applet" = busybox ] || ln -sf busybox $R/bin/"$applet"
done
for applet in init poweroff reboot halt modprobe insmod udhcpc acpid getty; do ln -sf ../bin/busybox $R/sbin/$applet; done

# dropbear and exactly the shared objects it loads (the loader, libc, libcrypt, libtom*, gmp, zlib).
mkdir -p $R/usr/sbin $R/lib/x86_64-linux-gnu $R/lib64 $R/etc/dropbear
cp ssh/usr/sbin/dropbear $R/usr/sbin/dropbear
for lib in libc.so.6 libcrypt.so.1 libtomcrypt.so.1 libtommath.so.1 libgmp.so.10 libz.so.1; do
    found="$(find ssh -name "$lib" | head -n 1)"
    [ -n "$found" ] || { log "no $lib in $SSHPKGS"; exit 1; }
    cp -L "$found" $R/lib/x86_64-linux-gnu/"$lib"
done
cp -L "$(find ssh -name ld-linux-x86-64.so.2 | head -n 1)" $R/lib64/ld-linux-x86-64.so.2
# Every library dropbear loads must come from the image, not from this build host.
outside="$($R/lib64/ld-linux-x86-64.so.2 --library-path "$PWD/$R/lib/x86_64-linux-gnu" --list $R/usr/sbin/dropbear |
    awk '/=>/ && $1 !~ /ld-linux/ && $3 !~ "^'"$PWD/$R"'/" {print $1}')"
[ -z "$outside" ] || { log "dropbear also needs: $outside (add their packages to SSHPKGS)"; exit 1; }

# Kernel modules: the wanted ones and what they depend on (busybox depmod writes modules.dep).
$BB depmod -b kernel "$KVER"
WANT="virtio_pci virtio_blk virtio_net virtio_scsi virtio_rng virtio_balloon virtio_console sd_mod
      button evdev isofs vfat nls_ascii nls_cp437"
DEP=kernel/lib/modules/"$KVER"/modules.dep
need=""
resolve() {
    local line file
    line="$(grep -E "/$1\.ko:" "$DEP" || true)"
    [ -n "$line" ] || return 0
    for file in ${line/:/ }; do
        case " $need " in *" $file "*) ;; *) need="$need $file"; resolve "$(basename "$file" .ko)";; esac
    done
}
for m in $WANT; do resolve "$m"; done
for file in $need; do
    mkdir -p "$R/lib/modules/$KVER/$(dirname "$file")"
    cp "kernel/lib/modules/$KVER/$file" "$R/lib/modules/$KVER/$file"
done
cp kernel/lib/modules/"$KVER"/modules.builtin kernel/lib/modules/"$KVER"/modules.order $R/lib/modules/"$KVER"/
$BB depmod -b $R "$KVER"

cat > $R/etc/inittab <<'EOF'
::sysinit:/etc/rc.boot
::respawn:/sbin/acpid -f -c /etc/acpi -l /dev/null
ttyS0::respawn:/sbin/getty -L 115200 ttyS0 vt100
::ctrlaltdel:/sbin/reboot
::shutdown:/etc/rc.shutdown
EOF

# busybox acpid runs /etc/acpi/PWRF/00000080 on the power button.
cat > $R/etc/acpi/PWRF/00000080 <<'EOF'
#!/bin/sh
echo "meridian-guest: power button" > /dev/ttyS0
exec /sbin/poweroff
EOF
chmod 755 $R/etc/acpi/PWRF/00000080

cat > $R/etc/rc.shutdown <<'EOF'
#!/bin/sh
echo "meridian-guest: shutting down" > /dev/ttyS0
umount -a -r 2>/dev/null
EOF
chmod 755 $R/etc/rc.shutdown

cat > $R/usr/share/udhcpc/default.script <<'EOF'
#!/bin/sh
# udhcpc calls this with the lease in the environment.
case "$1" in
    deconfig)
        ip -4 addr flush dev "$interface"
        ip link set "$interface" up
        ;;
    bound|renew)
        ip -4 addr flush dev "$interface"
        ip addr add "$ip/${mask:-24}" dev "$interface"
        if [ -n "$router" ]; then
            ip route add default via "${router%% *}" dev "$interface" 2>/dev/null || true
        fi
        : > /etc/resolv.conf
        for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done
        echo "$ip" > /run/ip
        ;;
esac
exit 0
EOF
chmod 755 $R/usr/share/udhcpc/default.script

cat > $R/etc/rc.boot <<'EOF'
#!/bin/sh
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
for m in virtio_pci virtio_blk virtio_net virtio_scsi sd_mod virtio_rng button evdev isofs vfat nls_ascii nls_cp437; do
    modprobe "$m" 2>/dev/null
done
ip link set lo up

say() { echo "meridian-guest: $*" > /dev/ttyS0; }
say "boot cmdline=$(cat /proc/cmdline)"

name="meridian-guest"
for arg in $(cat /proc/cmdline); do
    case "$arg" in meridian.hostname=*) name="${arg#meridian.hostname=}";; esac
done

# The config drive (Nova's layout), read-only; its device shows up once virtio_blk is in.
drive=""
for _ in 1 2 3 4 5 6 7 8 9 10; do
    drive="$(findfs LABEL=config-2 2>/dev/null)" && break
    drive=""
    sleep 0.1
done
if [ -n "$drive" ] && mount -o ro "$drive" /mnt/config 2>/dev/null; then
    meta=/mnt/config/openstack/latest/meta_data.json
    if [ -r "$meta" ]; then
        h="$(grep -o '"hostname": *"[^"]*"' "$meta" | head -n 1 | sed 's/.*: *"\(.*\)"/\1/')"
        [ -n "$h" ] && name="$h"
        u="$(grep -o '"uuid": *"[^"]*"' "$meta" | head -n 1 | sed 's/.*: *"\(.*\)"/\1/')"
        say "config-drive=$drive uuid=$u"
    fi
else
    say "config-drive=none"
fi
hostname "$name"
say "hostname=$(hostname)"

# DHCP on the first NIC: a few quick tries, then carry on without an address. The NIC, like
# the config drive, may show up a moment after its module is in (a loaded host probes late).
ip=none
for _ in $(seq 1 50); do
    [ -e /sys/class/net/eth0 ] && break
    sleep 0.1
done
if [ -e /sys/class/net/eth0 ]; then
    ip link set eth0 up
    if udhcpc -i eth0 -s /usr/share/udhcpc/default.script -n -q -t 20 -T 1 -A 1 >/dev/null 2>&1 && [ -s /run/ip ]; then
        ip="$(cat /run/ip)"
    else
        say "dhcp: no lease on eth0"
    fi
else
    say "dhcp: no eth0 (interfaces: $(ls /sys/class/net | tr '\n' ' '))"
fi
say "ip=$ip uptime=$(cut -d" " -f1 /proc/uptime)"

# No config drive: the metadata service, as cloud-init falls back to it. `mdir` is where
# meta_data.json and user_data are read from below (the drive's, or these copies).
mdir=/mnt/config/openstack/latest
if [ -z "$drive" ] && [ "$ip" != none ]; then
    mdir=/run/metadata
    mkdir -p "$mdir"
    url=http://169.254.169.254/openstack/latest
    # busybox's wget has no timeout of its own.
    get() { timeout 20 wget -q "$@" 2>/dev/null; }
    if get -O "$mdir/meta_data.json" "$url/meta_data.json"; then
        get -O "$mdir/user_data" "$url/user_data" || rm -f "$mdir/user_data"
        field() { grep -o "\"$1\": *\"[^\"]*\"" "$2" | head -n 1 | sed 's/.*: *"\(.*\)"/\1/'; }
        h="$(field hostname "$mdir/meta_data.json")"
        [ -n "$h" ] && hostname "$h"
        keys="$(tr -d '\n' < "$mdir/meta_data.json" | grep -o '"public_keys": *{[^}]*}' | grep -o '": *"' | grep -c .)"
        first=none
        [ -s "$mdir/user_data" ] && first="$(head -n 1 "$mdir/user_data")"
        say "metadata hostname=$h keys=$keys user_data=$first"
        # A test hook: the instance's metadata key probe_xff names another guest's address,
        # sent as a forged X-Forwarded-For; the answer must still be this guest's own.
        probe="$(field probe_xff "$mdir/meta_data.json")"
        if [ -n "$probe" ]; then
            get -O /run/forged.json --header "X-Forwarded-For: $probe" "$url/meta_data.json"
            say "metadata forged-xff=$probe uuid=$(field uuid /run/forged.json)"
        fi
    else
        rm -f "$mdir/meta_data.json"
        say "metadata none"
    fi
fi
say "smbios manufacturer=$(cat /sys/class/dmi/id/sys_vendor 2>/dev/null) product=$(cat /sys/class/dmi/id/product_name 2>/dev/null) serial=$(cat /sys/class/dmi/id/product_serial 2>/dev/null)"

# SSH: root's authorized_keys from the config drive's public_keys, then dropbear (host keys
# made now, on first boot; the initramfs is fresh each boot, so every boot is a first boot).
mkdir -p /root/.ssh && chmod 700 /root /root/.ssh
: > /root/.ssh/authorized_keys
if [ -r "$mdir/meta_data.json" ]; then
    tr -d '\n' < "$mdir/meta_data.json" | grep -o '"public_keys": *{[^}]*}' |
        grep -o '": *"[^"]*"' | sed 's/^": *"//; s/"$//; s/\\n//g' > /root/.ssh/authorized_keys
fi
chmod 600 /root/.ssh/authorized_keys
/usr/sbin/dropbear -R -s -p 22 >/dev/null 2>&1 </dev/null
say "ssh=dropbear keys=$(grep -c . /root/.ssh/authorized_keys)"

# A tiny TCP service for the security group tests.
mkdir -p /www && echo "meridian-guest $(hostname)" > /www/index.html
httpd -p 8080 -h /www

ud="$mdir/user_data"
if [ -r "$ud" ] && [ "$(head -c 2 "$ud")" = '#!' ]; then
    cp "$ud" /run/user_data && chmod 700 /run/user_data
    /run/user_data > /dev/ttyS0 2>&1
    say "user-data exit=$?"
fi

cat > /etc/issue <<ISSUE

Meridian guest $(hostname) (busybox, \l) - ip $ip
Log in as root (no password).

ISSUE
say "ready hostname=$(hostname) ip=$ip uptime=$(cut -d" " -f1 /proc/uptime)"
EOF
chmod 755 $R/etc/rc.boot

cat > $R/etc/passwd <<'EOF'
root::0:0:root:/root:/bin/sh
EOF
echo 'root::0:0:99999:7:::' > $R/etc/shadow
echo 'root:x:0:' > $R/etc/group
echo '/bin/sh' > $R/etc/shells
echo 'meridian-guest' > $R/etc/hostname
ln -sf bin/busybox $R/init

(cd $R && find . | LC_ALL=C sort | ../$BB cpio -o -H newc 2>/dev/null) | gzip -9 > initrd.img
cp kernel/boot/vmlinuz-"$KVER" vmlinuz

# --- disk: MBR + FAT partition at 1 MiB with SYSLINUX, no mounts ----------------------------
PART_MB=48
cat > syslinux.cfg <<'EOF'
DEFAULT meridian
PROMPT 0
TIMEOUT 0
LABEL meridian
  KERNEL /vmlinuz
  APPEND initrd=/initrd.img console=ttyS0,115200 quiet panic=5
EOF
mkfs.vfat -n MERIDIAN -C fat.img $((PART_MB * 1024)) >/dev/null
export MTOOLS_SKIP_CHECK=1
mcopy -i fat.img vmlinuz initrd.img syslinux.cfg "$LDLINUX_C32" ::/
syslinux --install fat.img

truncate -s $(((PART_MB + 1) * 1024 * 1024)) disk.raw
echo 'start=2048, type=c, bootable' | sfdisk -q disk.raw
dd if="$MBR" of=disk.raw bs=440 count=1 conv=notrunc status=none
dd if=fat.img of=disk.raw bs=1M seek=1 conv=notrunc status=none
qemu-img convert -q -f raw -O qcow2 disk.raw disk.qcow2

mkdir -p "$WORK/out"
mv disk.qcow2 vmlinuz initrd.img "$WORK/out/"
echo "$KPKG" > "$WORK/out/kernel-package"
rm -rf "$OUT"
mv "$WORK/out" "$OUT"
# Images of earlier versions of this script are of no further use.
for old in "$CACHE"/*; do
    case "$(basename "$old")" in "$KEY") ;; [0-9a-f]*) [ ${#old} -gt 0 ] && rm -rf "$old" ;; esac
done
log "built $OUT ($(du -sh "$OUT" | cut -f1))"
echo "$OUT"
