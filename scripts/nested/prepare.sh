#!/usr/bin/env bash
# Prepares the L1 kernel of the nested test harness: Debian's cloud kernel
# (vmlinuz) and the modules L1 loads at boot, with their dependencies: the
# ones that give L1 a /dev/kvm on QEMU's emulated AMD SVM (irqbypass, kvm,
# kvm-amd), and the ones a host gives vmctld's networking (bridge, tun,
# veth, nftables with NAT, conntrack and fib) and QEMU's vhost-net. The
# package is downloaded and unpacked, never installed, into a cache outside
# the repository:
#
#   ${CACHE_DIR:-${VMCTL_CACHE_DIR:-/var/cache/vmctl}}/nested/<kernel release>/
#       vmlinuz  *.ko  modules.order  kernel.release  package
#   .../nested/current -> <kernel release>
#
# modules.order lists the modules in the order they load (dependencies first).
#
# Usage: prepare.sh [CACHE_DIR]. Prints the prepared directory on stdout.
# Idempotent: when the version the archive offers is already unpacked, a run
# only asks the local apt cache (no network). Without apt lists it uses what
# is already cached, and runs `apt-get update` only when nothing is.
set -euo pipefail

cache_root=${1:-${VMCTL_CACHE_DIR:-/var/cache/vmctl}}
nested=$cache_root/nested
meta=linux-image-cloud-amd64
# Keep in step with RequiredModules in internal/nested/kernel.go.
modules=(irqbypass kvm kvm-amd bridge tun veth vhost_net
	nf_tables nft_ct nft_masq nft_nat nft_chain_nat nft_fib_inet nft_fib_ipv4 nft_fib_ipv6)

log() { echo "nested/prepare: $*" >&2; }
die() { log "$*"; exit 1; }

# complete: prepared, with every module of the list above (a cache made
# when the list was shorter is prepared again).
complete() {
	[ -f "$1/.complete" ] && [ -f "$1/modules.order" ] || return 1
	for m in "${modules[@]}"; do
		grep -qx "$m" "$1/modules.order" && [ -f "$1/$m.ko" ] || return 1
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
# insmod only ever sees plain .ko files. A module's dependencies are its
# .modinfo "depends=" entry (names with underscores, files may use dashes);
# each module is copied after the ones it depends on.
moddir=$work/root/lib/modules/$release
declare -A done_=()
order=()
add_module() {
	local m=$1 f dep
	[ -z "${done_[$m]:-}" ] || return 0
	done_[$m]=1
	f=$(find "$moddir" \( -name "$m.ko*" -o -name "${m//_/-}.ko*" -o -name "${m//-/_}.ko*" \) | head -n1)
	[ -n "$f" ] || die "$pkg has no $m module"
	local name
	name=$(basename "$f")
	name=${name%%.ko*}
	case "$f" in
	*.ko) cp "$f" "$out/$name.ko" ;;
	*.ko.xz) xz -dc "$f" >"$out/$name.ko" ;;
	*.ko.zst)
		command -v zstd >/dev/null || die "$f is zstd-compressed: apt-get install zstd"
		zstd -qdc "$f" >"$out/$name.ko"
		;;
	*) die "unexpected module file $f" ;;
	esac
	for dep in $(tr '\0' '\n' <"$out/$name.ko" | sed -n 's/^depends=//p' | head -n1 | tr , ' '); do
		add_module "$dep"
	done
	order+=("$name")
}
for m in "${modules[@]}"; do
	add_module "$m"
done
printf '%s\n' "${order[@]}" >"$out/modules.order"
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
