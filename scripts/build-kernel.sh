#!/usr/bin/env bash
# Builds the vmctl guest kernel from Debian's linux-source-6.1 and installs it into OUTDIR as
# vmlinuz (bzImage), vmlinux (ELF, for PVH boot) and kernel.release.
#
# The configuration is `make tinyconfig` + every kernel-config/*.config fragment + olddefconfig,
# and the build fails if any fragment option did not end up with the requested value.
#
# Results are cached outside the repository by a hash of the fragments, this script and the
# linux-source-6.1 package version:
#   ${VMCTL_CACHE_DIR:-/var/cache/vmctl}/kernel/<hash>/{bzImage,vmlinux,config,release}
# so a second run with nothing changed only copies files (and skips even that when OUTDIR is
# already up to date). It does not install packages: scripts/install-deps.sh does.
set -euo pipefail

prog=build-kernel
die() { echo "$prog: $*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: scripts/build-kernel.sh OUTDIR"
outdir=$1

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
script_path="$repo_root/scripts/build-kernel.sh"
config_dir="$repo_root/kernel-config"
source_pkg=linux-source-6.1
source_tar=/usr/src/linux-source-6.1.tar.xz

# Reproducible builds: fixed identity and timestamp in the version banner, a fixed build number.
export KBUILD_BUILD_TIMESTAMP="Thu Jan  1 00:00:00 UTC 1970"
export KBUILD_BUILD_USER=vmctl
export KBUILD_BUILD_HOST=vmctl
export KBUILD_BUILD_VERSION=1
# Make's LOCALVERSION variable would be appended to CONFIG_LOCALVERSION; the fragment owns it.
unset LOCALVERSION
# A caller's make (`make kernel -j8`) or kbuild settings must not leak into this build: the
# output has to depend only on what the cache key covers.
unset MAKEFLAGS MFLAGS MAKELEVEL KBUILD_OUTPUT O KCFLAGS KCPPFLAGS KAFLAGS CROSS_COMPILE CC LD
export ARCH=x86_64
export LC_ALL=C

[ "$(uname -m)" = x86_64 ] || die "the guest kernel is x86_64 and is built natively; this host is $(uname -m)"

shopt -s nullglob
fragments=("$config_dir"/*.config)
shopt -u nullglob
[ ${#fragments[@]} -gt 0 ] || die "no kernel-config/*.config fragments found in $config_dir"

pkg_version=$(dpkg-query -W -f='${Version}' "$source_pkg" 2>/dev/null) ||
	die "$source_pkg is not installed; run scripts/install-deps.sh"
[ -r "$source_tar" ] || die "$source_tar is missing; reinstall $source_pkg"

# The cache key covers everything that determines the output. Fragment names are included
# because merge order (glob order) matters when two fragments set the same option.
hash=$(
	{
		printf 'source %s %s\n' "$source_pkg" "$pkg_version"
		for f in "${fragments[@]}"; do
			printf 'fragment %s %s\n' "$(basename "$f")" "$(sha256sum <"$f" | cut -d' ' -f1)"
		done
		printf 'script %s\n' "$(sha256sum <"$script_path" | cut -d' ' -f1)"
	} | sha256sum | cut -c1-24
)

cache_root="${VMCTL_CACHE_DIR:-/var/cache/vmctl}/kernel"
entry="$cache_root/$hash"

# check_config FRAGMENT... compares every option a fragment sets (or unsets) with .config in
# the current directory and prints one line per mismatch. Exit status 1 if any.
check_config() {
	awk '
		FNR == NR {
			if (match($0, /^CONFIG_[A-Za-z0-9_]+=/)) {
				have[substr($0, 1, RLENGTH - 1)] = substr($0, RLENGTH + 1)
			}
			next
		}
		/^CONFIG_[A-Za-z0-9_]+=/ {
			eq = index($0, "=")
			name = substr($0, 1, eq - 1); want = substr($0, eq + 1)
			got = (name in have) ? have[name] : "n"
			if (got != want) { printf "  %s: wanted %s, got %s (%s)\n", name, want, got, FILENAME; bad = 1 }
			next
		}
		/^# CONFIG_[A-Za-z0-9_]+ is not set$/ {
			name = $2
			if (name in have && have[name] != "n") {
				printf "  %s: wanted n, got %s (%s)\n", name, have[name], FILENAME; bad = 1
			}
		}
		END { exit bad }
	' .config "$@"
}

build() {
	local work stage log
	work=$(mktemp -d "${TMPDIR:-/tmp}/vmctl-kernel.XXXXXX")
	stage=$(mktemp -d "$cache_root/.stage.XXXXXX")
	log="$work/build.log"
	# The source tree is ~1.5 GB once built: never leave it behind, whatever happens.
	trap 'rm -rf "$work" "$stage"' EXIT

	local missing=()
	for tool in make gcc flex bison bc xz gzip perl; do
		command -v "$tool" >/dev/null || missing+=("$tool")
	done
	[ -e /usr/include/gelf.h ] || missing+=("libelf-dev")
	[ ${#missing[@]} -eq 0 ] || die "missing build tools: ${missing[*]}; run scripts/install-deps.sh"

	echo "$prog: building kernel $hash from $source_pkg $pkg_version (a few minutes; log: $log)"
	tar -xJf "$source_tar" -C "$work" --strip-components=1

	local src="$work"
	local jobs
	jobs=$(nproc)
	if ! (
		cd "$src"
		make tinyconfig
		scripts/kconfig/merge_config.sh -m .config "${fragments[@]}"
		make olddefconfig
	) >"$log" 2>&1; then
		tail -n 40 "$log" >&2
		die "kernel configuration failed"
	fi

	local mismatches
	if ! mismatches=$(cd "$src" && check_config "${fragments[@]}"); then
		echo "$prog: these kernel-config options did not survive olddefconfig (missing dependency or typo):" >&2
		echo "$mismatches" >&2
		die "fix kernel-config/ so every requested option can take its value"
	fi

	if ! make -C "$src" -j"$jobs" bzImage vmlinux >>"$log" 2>&1; then
		tail -n 60 "$log" >&2
		mkdir -p "$cache_root"
		cp "$log" "$cache_root/last-failed-build.log" || true
		die "kernel build failed (full log: $cache_root/last-failed-build.log)"
	fi

	local release
	release=$(make -s -C "$src" kernelrelease)
	[ "$release" != "$(uname -r)" ] ||
		die "kernel release $release equals the host's; change CONFIG_LOCALVERSION in kernel-config/"

	cp "$src/arch/x86/boot/bzImage" "$stage/bzImage"
	cp "$src/vmlinux" "$stage/vmlinux"
	cp "$src/.config" "$stage/config"
	printf '%s\n' "$release" >"$stage/release"
	chmod 0755 "$stage"
	# Publish atomically: readers see either no entry or a complete one.
	mv -T "$stage" "$entry"
	rm -rf "$work"
	trap - EXIT
	echo "$prog: built $release in $entry"
}

mkdir -p "$cache_root" 2>/dev/null ||
	die "cannot create $cache_root; run as root or set VMCTL_CACHE_DIR to a writable directory"
if [ ! -f "$entry/release" ]; then
	# One builder per hash: a concurrent run waits, then finds the entry.
	exec 9>"$cache_root/.$hash.lock"
	flock 9
	if [ ! -f "$entry/release" ]; then
		build
	fi
	exec 9>&-
fi

# install_file SRC DST copies only when the content differs, through a temp file and rename,
# so a VM starting from OUTDIR never reads a half-written kernel.
install_file() {
	if cmp -s "$1" "$2"; then
		return 0
	fi
	cp "$1" "$2.tmp.$$"
	mv -f "$2.tmp.$$" "$2"
}

mkdir -p "$outdir"
install_file "$entry/bzImage" "$outdir/vmlinuz"
install_file "$entry/vmlinux" "$outdir/vmlinux"
install_file "$entry/release" "$outdir/kernel.release"
echo "$prog: $(cat "$entry/release") -> $outdir (cache $entry)"
