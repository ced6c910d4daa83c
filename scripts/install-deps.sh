#!/usr/bin/env bash
# Installs the Debian packages vmctl needs to build, run and test. Idempotent: a
# machine that already has everything costs one dpkg query.
set -euo pipefail

packages=(
	# run: the QEMU driver and disk images
	qemu-system-x86 e2fsprogs
	# build: the guest kernel (Debian's 6.1 source) and protobuf contracts (make proto,
	# and the test that the checked-in generated code is current)
	linux-source-6.1 flex bison libelf-dev bc make gcc protobuf-compiler
	# images and tests: a static busybox for the demo image, socket plumbing,
	# a real registry server for pull/push tests
	busybox-static socat docker-registry
	# make install's units are checked with systemd-analyze, socket activation
	# with systemd-socket-activate
	systemd
	# make bench's peer for image builds
	buildah
	# Docker's Python SDK drives vmctld in the tests, as users' scripts do
	python3-docker
	# the containerd shim's tests run a real containerd (and runc, its
	# default runtime and the shim's benchmark peer), and CNI's plugins for
	# its Kubernetes pods
	containerd runc containernetworking-plugins
	# make bench's gVisor peer of the shim (Debian's runsc has no
	# containerd-shim-runsc-v1: it runs under containerd's runc shim)
	runsc
	# make appliance: a Debian tree (debootstrap), a disk image assembled
	# without loop devices (FAT and SYSLINUX through mtools, ext4 from a
	# directory), qemu-img's qcow2 and VMDK, xmllint for the OVF schema
	debootstrap fdisk dosfstools mtools syslinux syslinux-common qemu-utils libxml2-utils
)

# The docker CLI drives vmctld in the tests. Machines usually have one; only
# where none is on PATH, install Debian's (it brings a client that speaks API 1.41).
if ! command -v docker >/dev/null 2>&1; then
	packages+=(docker.io)
fi

missing=()
for p in "${packages[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing+=("$p")
	fi
done
if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: missing packages (${missing[*]}); run as root or install them" >&2
	exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
