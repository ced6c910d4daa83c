#!/usr/bin/env bash
# Usage: scripts/proto.sh [--tools | OUTDIR]
# Generates the Go code of the contracts in api/ (agent/v1, vmm/v1) from their .proto files:
# NAME.pb.go (protoc-gen-go) and NAME_ttrpc.pb.go (protoc-gen-go-ttrpc), beside the .proto, or
# under OUTDIR with the same layout (OUTDIR/agent/v1/...) when one is given; tests/proto_test.go
# does that to find checked-in files that no longer match their .proto.
#
# The generators are pinned here, at the versions that produced the checked-in files, and
# installed from the Go module proxy outside the repository:
#   ${VMCTL_CACHE_DIR:-/var/cache/vmctl}/protoc-gen/<generator>@<version>/
# protoc itself is Debian's (protobuf-compiler, from scripts/install-deps.sh); its version is
# written into every .pb.go, so a different protoc shows up as a changed header.
set -euo pipefail

prog=proto
die() { echo "$prog: $*" >&2; exit 1; }

# protoc-gen-go comes with google.golang.org/protobuf: keep it at go.mod's version, which
# the generated code is built against. protoc-gen-go-ttrpc comes with github.com/containerd/ttrpc.
protoc_gen_go=google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
protoc_gen_go_ttrpc=github.com/containerd/ttrpc/cmd/protoc-gen-go-ttrpc@v1.2.10
protoc_version="libprotoc 3.21.12"

# --tools installs the generators and does nothing else: the tests run it
# before they enter a network namespace of their own, where the module proxy
# is out of reach.
tools_only=
if [ "${1:-}" = "--tools" ]; then
	tools_only=1
	shift
fi
[ $# -le 1 ] || die "usage: scripts/proto.sh [--tools | OUTDIR]"
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
api="$repo_root/api"
outdir=${1:-$api}

command -v protoc >/dev/null || die "protoc not found: install protobuf-compiler (scripts/install-deps.sh)"
got=$(protoc --version)
[ "$got" = "$protoc_version" ] || die "protoc is '$got', want '$protoc_version' (Debian bookworm's protobuf-compiler)"

tools="${VMCTL_CACHE_DIR:-/var/cache/vmctl}/protoc-gen"

# install PKG@VERSION prints the path of its binary, installing it first if needed.
install() {
	local pkg=$1 name dir
	name=$(basename "${pkg%@*}")
	dir="$tools/$name@${pkg#*@}"
	if [ ! -x "$dir/$name" ]; then
		mkdir -p "$tools"
		local stage
		stage=$(mktemp -d "$tools/.stage.XXXXXX")
		# Outside any module, so that only the version pinned above counts.
		if ! (cd "$stage" && GOBIN="$stage" GOFLAGS=-trimpath GO111MODULE=on go install "$pkg") >&2; then
			rm -rf "$stage"
			die "go install $pkg failed"
		fi
		# Another run may have installed it meanwhile: keep whichever came first.
		mv -T "$stage" "$dir" 2>/dev/null || rm -rf "$stage"
	fi
	echo "$dir/$name"
}
gen_go=$(install "$protoc_gen_go")
gen_ttrpc=$(install "$protoc_gen_go_ttrpc")
[ -z "$tools_only" ] || exit 0

protos=()
while IFS= read -r p; do protos+=("$p"); done < <(cd "$api" && find . -name '*.proto' | sed 's|^\./||' | sort)
[ ${#protos[@]} -gt 0 ] || die "no .proto files under $api"

for p in "${protos[@]}"; do
	dir=$(dirname "$p")
	mkdir -p "$outdir/$dir"
	# -I the file's own directory: the generated headers name the source as "agent.proto".
	# prefix=TTRPC names the ttrpc service TTRPCAgentService, as containerd's contracts do, so
	# that it cannot be mistaken for a gRPC one.
	protoc -I "$api/$dir" \
		--plugin=protoc-gen-go="$gen_go" --go_out="$outdir/$dir" --go_opt=paths=source_relative \
		--plugin=protoc-gen-go-ttrpc="$gen_ttrpc" --go-ttrpc_out="$outdir/$dir" --go-ttrpc_opt=paths=source_relative,prefix=TTRPC \
		"$(basename "$p")"
done
