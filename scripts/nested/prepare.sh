#!/usr/bin/env bash
# Prepares the L1 kernel of the nested test harness: Debian's cloud kernel
# (vmlinuz), the three modules that give L1 a /dev/kvm on QEMU's emulated
# AMD SVM (irqbypass, kvm, kvm-amd), the ones the network scenarios load
# for a tap on a bridge (llc, stp, bridge, tun) and the ones QEMU's
# vhost-net needs in the network benchmark (vhost_iotlb, vhost, tap,
# vhost_net). The package is downloaded and unpacked, never installed, into
# a cache outside the repository:
#
#   ${CACHE_DIR:-${VMCTL_CACHE_DIR:-/var/cache/vmctl}}/nested/<kernel release>/
#       vmlinuz  irqbypass.ko  kvm.ko  kvm-amd.ko  ...  kernel.release  package
#   .../nested/current -> <kernel release>
#
# Usage: prepare.sh [CACHE_DIR]. Prints the prepared directory on stdout.
# Idempotent: when the version the archive offers is already unpacked, a run
# only asks the local apt cache (no network). Without apt lists it uses what
# is already cached, and runs `apt-get update` only when nothing is.
set -euo pipefail

cache_root=${1:-${VMCTL_CACHE_DIR:-/var/cache/vmctl}}
nested=$cache_root/nested
meta=linux-image-cloud-amd64
modules=(irqbypass kvm kvm-amd llc stp bridge tun vhost_iotlb vhost tap vhost_net)

log() { echo "nested/prepare: $*" >&2; }
die() { log "$*"; exit 1; }

# complete: prepared, with every module of the list above (a cache made
# when the list was shorter is prepared again).
complete() {
	[ -f "$1/.complete" ] || return 1
	for m in "${modules[@]}"; do
		[ -f "$1/$m.ko" ] || return 1
	done
}

# resolve prints the versioned package the meta-package depends on now
# (linux-image-<release>-cloud-amd64), or nothing when apt does not know it.
resolve() {
	apt-cache depends "$meta" 2>/dev/null |
		sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-cloud-amd64\)$/\1/p' | head -n1
}

pkg=$(resolve)
if [ -z "$pkg" ] && complete "$nested/current"; then
	# No apt lists (or no network to refresh them): keep what we have.
	readlink -f "$nested/current"
	exit 0
fi
if [ -z "$pkg" ]; then
	[ "$(id -u)" -eq 0 ] || die "apt does not know $meta and refreshing its lists needs root"
	log "apt lists do not know $meta: running apt-get update"
	apt-get update -qq >&2
	pkg=$(resolve)
	[ -n "$pkg" ] || die "$meta is not in the configured Debian archive"
fi

release=${pkg#linux-image-}
dir=$nested/$release
if complete "$dir"; then
	ln -sfn "$release" "$nested/current"
	echo "$dir"
	exit 0
fi

command -v dpkg-deb >/dev/null || die "dpkg-deb is missing"
mkdir -p "$nested"
work=$(mktemp -d "$nested/.prepare.XXXXXX")
trap 'rm -rf "$work"' EXIT

log "downloading $pkg"
# apt-get download drops privileges to _apt when it can write the directory
# as that user; the temporary directory is root's, which only makes apt warn.
(cd "$work" && apt-get download -q "$pkg" >&2 2> >(grep -v 'unsandboxed as root' >&2))
deb=$(ls "$work"/*.deb)
dpkg-deb -x "$deb" "$work/root"

out=$work/out
mkdir -p "$out"
cp "$work/root/boot/vmlinuz-$release" "$out/vmlinuz"

# Module file names depend on how Debian built the package (.ko in bookworm's
# 6.1, .ko.xz or .ko.zst in later ones); decompress here so that L1's busybox
# insmod only ever sees plain .ko files.
moddir=$work/root/lib/modules/$release
for m in "${modules[@]}"; do
	f=$(find "$moddir" -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" | head -n1)
	[ -n "$f" ] || die "$pkg has no $m module"
	case "$f" in
	*.ko) cp "$f" "$out/$m.ko" ;;
	*.ko.xz) xz -dc "$f" >"$out/$m.ko" ;;
	*.ko.zst)
		command -v zstd >/dev/null || die "$f is zstd-compressed: apt-get install zstd"
		zstd -qdc "$f" >"$out/$m.ko"
		;;
	esac
done
echo "$release" >"$out/kernel.release"
dpkg-deb -f "$deb" Package Version >"$out/package"
touch "$out/.complete"

# Publish atomically: a concurrent or interrupted run never leaves a
# half-filled directory that looks complete.
rm -rf "$dir"
mv "$out" "$dir"
ln -sfn "$release" "$nested/current"
log "prepared $dir"
echo "$dir"
