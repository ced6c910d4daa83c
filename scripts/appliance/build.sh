#!/usr/bin/env bash
# Builds the demo appliance: a bootable Debian 12 disk with vmctl installed,
# from Debian's packages alone, with no VM and no loop device:
#
#   build/appliance/vmctl.qcow2      for QEMU and libvirt
#   build/appliance/vmctl.ova        OVF 1.0 + streamOptimized VMDK, for
#                                    VirtualBox and VMware Workstation
#   build/appliance/SHA256SUMS       their digests
#
# The disk (MBR, BIOS boot, which VirtualBox, VMware and QEMU all start by
# default):
#   partition 1  FAT16, /boot: SYSLINUX, the kernel, the initramfs
#   partition 2  ext4, /: debootstrap's bookworm with the packages below,
#                vmctl as `make install` puts it, the busybox image loaded
#                into vmctld's data root, vmctld socket-activated
# Each file system is written straight into the image file at its offset
# (mkfs.fat --offset, mtools, syslinux --offset, mkfs.ext4 -E offset -d), so
# the build needs root only for debootstrap and the tree's owners.
#
# The debootstrapped base is cached outside the tree by a hash of the suite,
# mirror and package list (VMCTL_CACHE_DIR, default /var/cache/vmctl), as the
# guest kernel is; a second build only configures and assembles.
#
# Usage: build.sh   (run by `make appliance`, after build, kernel and image)
# Environment: APPLIANCE_MIRROR (default: the archive apt uses here),
# APPLIANCE_SIZE (disk size, default 8G), OUT (default build/appliance).
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
out=${OUT:-$repo/build/appliance}
cache=${VMCTL_CACHE_DIR:-/var/cache/vmctl}/appliance
suite=bookworm
size=${APPLIANCE_SIZE:-8G}
boot_mib=256
user=demo # the demo login; its password is the same (README)

# What the appliance runs besides Debian's minimal base: a kernel and
# init, DHCP and DNS (systemd-networkd/resolved), ssh, the QEMU that vmctl
# falls back to without nested virtualization (its virtiofsd serves bind
# mounts), and the docker CLI (Debian's docker.io; its own dockerd and
# containerd stay off: the CLI talks to vmctld).
packages=(
	linux-image-amd64 systemd-sysv udev dbus systemd-resolved
	iproute2 iputils-ping kmod procps less sudo openssh-server ca-certificates
	qemu-system-x86 e2fsprogs docker.io
)

export MTOOLS_SKIP_CHECK=1

log() { echo "appliance: $*" >&2; }
die() { log "$*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, and the tree's owners)"
for c in debootstrap sfdisk mkfs.fat mcopy syslinux mkfs.ext4 qemu-img tar go; do
	command -v "$c" >/dev/null || die "$c is missing (make deps installs it)"
done
for f in bin/vmctl bin/vmctld bin/vmctl-vmm bin/containerd-shim-vmctl-v1 \
	bin/guest/vmlinuz bin/guest/initramfs.img build/busybox.tar; do
	[ -f "$repo/$f" ] || die "$f is missing: make appliance builds it first"
done

# mirror: the archive apt uses on this machine (a deb822 URIs: line or a
# one-line "deb URI suite" entry), unless APPLIANCE_MIRROR names one.
mirror() {
	if [ -n "${APPLIANCE_MIRROR:-}" ]; then
		echo "$APPLIANCE_MIRROR"
		return
	fi
	local m
	m=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
		awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}')
	if [ -z "$m" ]; then
		m=$(grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
			awk '$2 !~ /security/ {print $2; exit}')
	fi
	[ -n "$m" ] || die "no Debian archive in apt's sources; set APPLIANCE_MIRROR"
	echo "$m"
}
mirror=$(mirror)

# The debootstrapped base, cached by what made it.
key=$(printf '%s\n' "$suite" "$mirror" "${packages[@]}" | sha256sum | cut -c1-16)
base=$cache/base-$key.tar
mkdir -p "$cache" "$out"
rootfs=$out/rootfs
bootdir=$out/boot
disk=$out/disk.raw
# The work files go whatever happens (a failed build leaves no 1 GiB tree
# behind); only the outputs stay.
# A debootstrap that failed may leave /proc and /sys mounted in the tree.
cleanup() {
	awk -v r="$rootfs/" 'index($2, r) == 1 {print $2}' /proc/self/mounts | sort -r | xargs -r umount -l
	rm -rf "$rootfs" "$bootdir" "$disk" "$out/vmctl-disk1.vmdk" "$base.tmp"
}
trap cleanup EXIT
rm -rf "$rootfs"
mkdir -p "$rootfs"
if [ ! -f "$base" ]; then
	log "debootstrap $suite from $mirror (several minutes; cached as $base)"
	mkdir -p "$cache/debs"
	debootstrap --variant=minbase --cache-dir="$cache/debs" \
		--include="$(
			IFS=,
			echo "${packages[*]}"
		)" "$suite" "$rootfs" "$mirror" >"$out/debootstrap.log" 2>&1 ||
		die "debootstrap failed: see $out/debootstrap.log"
	rm -f "$rootfs"/var/cache/apt/archives/*.deb
	tar -C "$rootfs" --numeric-owner --xattrs --xattrs-include='*' -cf "$base.tmp" .
	mv "$base.tmp" "$base"
else
	log "base from $base"
	tar -C "$rootfs" --numeric-owner --xattrs --xattrs-include='*' -xf "$base"
fi

log "configuring"
echo vmctl-demo >"$rootfs/etc/hostname"
cat >"$rootfs/etc/hosts" <<'EOF'
127.0.0.1	localhost
127.0.1.1	vmctl-demo
::1		localhost ip6-localhost ip6-loopback
EOF
cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
EOF
# A machine-id of its own on every copy's first boot; ssh host keys too.
: >"$rootfs/etc/machine-id"
rm -f "$rootfs"/etc/ssh/ssh_host_*
install -D -m 0644 "$repo/scripts/appliance/files/ssh-host-keys.service" \
	"$rootfs/etc/systemd/system/ssh-host-keys.service"
# DHCP on the NIC, whatever the outer hypervisor names it; names resolved
# by systemd-resolved (vmctld forwards its stub to the containers).
install -D -m 0644 "$repo/scripts/appliance/files/20-dhcp.network" \
	"$rootfs/etc/systemd/network/20-dhcp.network"
ln -sfn /run/systemd/resolve/stub-resolv.conf "$rootfs/etc/resolv.conf"

# vmctl, as `make install` puts it on any machine; the socket is the
# vmctl group's too, so the demo user drives vmctld without sudo (the same
# trust as Docker's docker group); the docker CLI finds it through
# DOCKER_HOST.
make -C "$repo" --no-print-directory -o build -o kernel install DESTDIR="$rootfs" PREFIX=/usr/local >/dev/null
install -D -m 0644 "$repo/scripts/appliance/files/vmctld-socket-group.conf" \
	"$rootfs/etc/systemd/system/vmctld.socket.d/appliance.conf"
echo 'DOCKER_HOST=unix:///run/vmctl/vmctl.sock' >>"$rootfs/etc/environment"

# The boot partition keeps fixed names; these hooks copy a newer kernel
# and initramfs onto them, so apt upgrades boot.
install -D -m 0755 "$repo/scripts/appliance/files/kernel-postinst" \
	"$rootfs/etc/kernel/postinst.d/zz-vmctl-boot"
install -D -m 0755 "$repo/scripts/appliance/files/initramfs-post-update" \
	"$rootfs/etc/initramfs/post-update.d/vmctl-boot"

groupadd -R "$rootfs" --system vmctl
useradd -R "$rootfs" -m -s /bin/bash -G sudo,vmctl,kvm "$user"
echo "$user:$user" | chpasswd -R "$rootfs"

systemctl --root="$rootfs" enable --quiet systemd-networkd systemd-resolved \
	ssh-host-keys.service vmctld.socket
systemctl --root="$rootfs" mask --quiet docker.service docker.socket
systemctl --root="$rootfs" disable --quiet containerd.service

# The busybox image, loaded into the data root vmctld uses.
"$repo/bin/vmctl" --data-root "$rootfs/var/lib/vmctl" load -i "$repo/build/busybox.tar" >/dev/null

# The kernel the appliance boots: the newest in the base.
kver=$(ls "$rootfs"/boot/vmlinuz-* | sed 's|.*/vmlinuz-||' | sort -V | tail -n1)
[ -n "$kver" ] && [ -f "$rootfs/boot/initrd.img-$kver" ] || die "no kernel and initramfs in the base"

# Version and contents, for `cat /etc/vmctl-appliance` and the tests.
{
	echo "vmctl $(git -C "$repo" describe --always --dirty 2>/dev/null || echo dev)"
	echo "debian $(cat "$rootfs/etc/debian_version")"
	echo "kernel $kver"
} >"$rootfs/etc/vmctl-appliance"

# The boot partition's contents leave the root file system: /boot is the
# FAT partition at run time.
rm -rf "$bootdir"
mkdir -p "$bootdir"
mv "$rootfs"/boot/* "$bootdir"/
cp "$bootdir/vmlinuz-$kver" "$bootdir/vmlinuz"
cp "$bootdir/initrd.img-$kver" "$bootdir/initrd.img"

root_uuid=$(cat /proc/sys/kernel/random/uuid)
boot_serial=$(od -An -N4 -tx4 /dev/urandom | tr -d ' ')
boot_id=${boot_serial:0:4}-${boot_serial:4:4}
boot_id=${boot_id^^}
cat >"$rootfs/etc/fstab" <<EOF
UUID=$root_uuid	/	ext4	errors=remount-ro	0 1
UUID=$boot_id	/boot	vfat	umask=0077	0 2
EOF
# The kernel command line, consoles on VGA and the first serial port (the
# last console= is where boot messages go); quiet: only errors on them.
cat >"$bootdir/syslinux.cfg" <<EOF
SERIAL 0 115200
DEFAULT vmctl
PROMPT 0
TIMEOUT 0
LABEL vmctl
  LINUX /vmlinuz
  INITRD /initrd.img
  APPEND root=UUID=$root_uuid ro quiet console=tty0 console=ttyS0,115200n8
EOF

log "assembling the disk"
rm -f "$disk"
truncate -s "$size" "$disk"
sector=512
boot_start=2048
boot_sectors=$((boot_mib * 1024 * 1024 / sector))
root_start=$((boot_start + boot_sectors))
sfdisk --quiet "$disk" <<EOF
label: dos
start=$boot_start, size=$boot_sectors, type=e, bootable
start=$root_start, type=83
EOF
disk_sectors=$(($(stat -c %s "$disk") / sector))
root_sectors=$((disk_sectors - root_start))

mkfs.fat -F 16 -n VMCTLBOOT -i "$boot_serial" --offset "$boot_start" "$disk" $((boot_sectors / 2)) >/dev/null 2>&1
img="$disk@@$((boot_start * sector))"
mcopy -i "$img" -o "$bootdir"/* ::/
syslinux --offset $((boot_start * sector)) --install "$disk" 2> >(grep -v "block count mismatch" >&2)
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$disk" bs=440 count=1 conv=notrunc status=none

mkfs.ext4 -q -F -L vmctl-root -U "$root_uuid" -d "$rootfs" \
	-E offset=$((root_start * sector)),lazy_itable_init=0,lazy_journal_init=0 \
	"$disk" $((root_sectors / 2))k

log "converting: qcow2, streamOptimized VMDK, OVA"
rm -f "$out/vmctl.qcow2" "$out/vmctl-disk1.vmdk" "$out/vmctl.ova"
qemu-img convert -O qcow2 -c "$disk" "$out/vmctl.qcow2"
qemu-img convert -O vmdk -o subformat=streamOptimized,adapter_type=ide "$disk" "$out/vmctl-disk1.vmdk"
(cd "$repo" && go run ./scripts/appliance/mkova -disk "$out/vmctl-disk1.vmdk" -o "$out/vmctl.ova")
(cd "$out" && sha256sum vmctl.ova vmctl.qcow2 >SHA256SUMS)
log "done: $(cd "$out" && ls -s --block-size=M vmctl.ova vmctl.qcow2 | tr '\n' ' ')"
