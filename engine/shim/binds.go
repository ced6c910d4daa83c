package shim

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/vmctl/vmctl/api/agent/contract"
	"github.com/vmctl/vmctl/engine/agent"
	"github.com/vmctl/vmctl/engine/sandbox"
)

// maxBinds bounds a task's host directories: each is a device of its VM.
const maxBinds = 8

// hostBinds takes the spec's bind mounts of host directories out of the
// spec: the guest has none of the host's paths, so each directory is
// shared with the VM and the agent binds the share at the mount's
// destination. Binds of files are refused (a VM sees host files through
// a shared directory, and sharing a file's directory would give the guest
// its neighbours too). It returns the shares (tags from index 0) and a
// function making their storages once the driver's file system is known.
func hostBinds(spec *specs.Spec) ([]sandbox.Share, func(fstype string) []agent.Storage, error) {
	var (
		shares []sandbox.Share
		dests  []string
		kept   []specs.Mount
	)
	for _, m := range spec.Mounts {
		if !isBind(m) {
			kept = append(kept, m)
			continue
		}
		src := filepath.Clean(m.Source)
		if !filepath.IsAbs(src) {
			return nil, nil, fmt.Errorf("%w: bind mount of %q: the source must be an absolute host path", errdefs.ErrInvalidArgument, m.Source)
		}
		st, err := os.Stat(src)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: bind mount source %s: %v", errdefs.ErrInvalidArgument, src, err)
		}
		if !st.IsDir() {
			return nil, nil, fmt.Errorf("%w: bind mounts of files are not supported: %s is not a directory (a VM shares directories; bind the directory that holds it)", errdefs.ErrNotImplemented, src)
		}
		if len(shares) == maxBinds {
			return nil, nil, fmt.Errorf("%w: more than %d bind mounts of host directories", errdefs.ErrInvalidArgument, maxBinds)
		}
		shares = append(shares, sandbox.Share{Path: src, Tag: contract.BindShareTag(len(shares)), ReadOnly: slices.Contains(m.Options, "ro")})
		dests = append(dests, m.Destination)
	}
	spec.Mounts = kept
	storages := func(fstype string) []agent.Storage {
		var out []agent.Storage
		for i, sh := range shares {
			out = append(out, agent.Storage{Serial: sh.Tag, FSType: fstype, Role: contract.RoleBind, MountPoint: dests[i], ReadOnly: sh.ReadOnly})
		}
		return out
	}
	return shares, storages, nil
}

// isBind reports whether m binds a path: type bind, or options that say so.
func isBind(m specs.Mount) bool {
	if m.Type == "bind" || m.Type == "rbind" {
		return true
	}
	return (m.Type == "" || m.Type == "none") && slices.ContainsFunc(m.Options, func(o string) bool { return o == "bind" || o == "rbind" })
}
