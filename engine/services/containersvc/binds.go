package containersvc

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/vmctl/vmctl/api/agent/contract"
	"github.com/vmctl/vmctl/engine/agent"
	"github.com/vmctl/vmctl/engine/containers"
	"github.com/vmctl/vmctl/engine/errs"
	"github.com/vmctl/vmctl/engine/sandbox"
)

// maxBinds bounds the bind mounts of one container: each is a virtio-9p
// device of its VM (vmctl-vmm takes 4 of them, QEMU more).
const maxBinds = 8

// volumeCount is how many of reqs are volumes (each takes a disk), not
// bind mounts.
func volumeCount(reqs []VolumeMount) int {
	n := 0
	for _, r := range reqs {
		if r.HostPath == "" {
			n++
		}
	}
	return n
}

// planBind checks a bind mount's host path at create. A path that exists
// must be a directory: a VM sees host files through a shared directory,
// and sharing a file's directory would give the guest its neighbours too.
// A missing path is created at start for -v, and refused here for
// --mount, as docker does.
func planBind(r VolumeMount, dst string) (containers.Bind, error) {
	src := r.HostPath
	if !filepath.IsAbs(src) {
		return containers.Bind{}, errs.New(errdefs.ErrInvalidArgument, "invalid mount config for type \"bind\": invalid mount path: %q: the host path must be absolute", src)
	}
	if strings.ContainsAny(src, "\x00\n") {
		return containers.Bind{}, errs.New(errdefs.ErrInvalidArgument, "invalid mount config for type \"bind\": host path %q contains a NUL or newline", src)
	}
	src = filepath.Clean(src)
	st, err := os.Stat(src)
	switch {
	case errors.Is(err, fs.ErrNotExist) && r.CreateHostPath:
	case errors.Is(err, fs.ErrNotExist):
		return containers.Bind{}, errs.New(errdefs.ErrInvalidArgument, "invalid mount config for type \"bind\": bind source path does not exist: %s", src)
	case err != nil:
		return containers.Bind{}, errs.New(errdefs.ErrInvalidArgument, "invalid mount config for type \"bind\": %v", err)
	case !st.IsDir():
		return containers.Bind{}, errFileBind(src)
	}
	return containers.Bind{Source: src, Destination: dst, ReadOnly: r.ReadOnly, CreateSource: r.CreateHostPath}, nil
}

func errFileBind(src string) error {
	return errs.New(errdefs.ErrInvalidArgument, "bind mounts of files are not supported: %s is not a directory (a VM shares directories; bind the directory that holds it)", src)
}

// bindAttachment is what a start adds to the VM and to the agent request
// for the container's bind mounts.
type bindAttachment struct {
	shares   []sandbox.Share
	storages []agent.Storage
}

// attachBinds resolves each bind mount's host path (symlinks included, so
// the share is the directory the path names now) and creates a missing
// one where -v asked for it. fstype is what the driver's guests mount
// shares with (sandbox.ShareFS).
func attachBinds(c *containers.Container, fstype string) (*bindAttachment, error) {
	a := &bindAttachment{}
	for i, b := range c.Config.Binds {
		if b.CreateSource {
			if _, err := os.Lstat(b.Source); errors.Is(err, fs.ErrNotExist) {
				if err := os.MkdirAll(b.Source, 0o755); err != nil {
					return nil, fmt.Errorf("create bind mount source %s: %w", b.Source, err)
				}
			}
		}
		dir, err := filepath.EvalSymlinks(b.Source)
		if err != nil {
			return nil, errs.New(errdefs.ErrInvalidArgument, "bind mount source %s of container %s: %v", b.Source, displayName(c), err)
		}
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			return nil, errFileBind(b.Source)
		}
		tag := contract.BindShareTag(i)
		a.shares = append(a.shares, sandbox.Share{Path: dir, Tag: tag, ReadOnly: b.ReadOnly})
		a.storages = append(a.storages, agent.Storage{
			Serial: tag, FSType: fstype, ReadOnly: b.ReadOnly, Role: contract.RoleBind, MountPoint: b.Destination,
		})
	}
	return a, nil
}
