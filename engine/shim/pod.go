package shim

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/vmctl/vmctl/api/agent/contract"
	"github.com/vmctl/vmctl/engine/agent"
)

// Kubernetes' CRI (containerd's cri plugin) marks a pod's tasks with
// these annotations: the pod's sandbox (its pause container) and the
// containers that join it, each naming the sandbox.
const (
	annoContainerType = "io.kubernetes.cri.container-type"
	annoSandboxID     = "io.kubernetes.cri.sandbox-id"
	typeSandbox       = "sandbox"
	typeContainer     = "container"
)

// kind is what a task is to the shim.
type kind int

const (
	// kindTask is a task of its own (ctr run): it has the VM to itself.
	kindTask kind = iota
	// kindSandbox is a pod's sandbox: the VM itself, with no process of
	// its own in it; it lives until killed.
	kindSandbox
	// kindMember is a container of a pod, in the pod's VM.
	kindMember
)

func taskKind(spec *specs.Spec) kind {
	switch spec.Annotations[annoContainerType] {
	case typeSandbox:
		return kindSandbox
	case typeContainer:
		return kindMember
	}
	return kindTask
}

// groupID is the shim a task belongs in: its pod's sandbox for a pod's
// container (so that containerd hands it to the shim that runs the pod's
// VM), else its own.
func groupID(spec *specs.Spec, id string) string {
	if taskKind(spec) == kindMember && spec.Annotations[annoSandboxID] != "" {
		return spec.Annotations[annoSandboxID]
	}
	return id
}

// pod is the VM of a pod: one directory shared with the guest, holding
// each member's rootfs (bound into it at the member's create, seen by
// the guest through mount propagation).
type pod struct {
	id     string // the sandbox's
	shared string
	// netNS is the pod's network namespace (CNI's), "" on the node's
	// network.
	netNS string
}

// podSharedDir is where pod sid's shared directory is.
func (c Config) podSharedDir(sid string) string { return filepath.Join(c.StateRoot, sid+".pod") }

// makeShared creates dir as a mount of its own with shared propagation,
// so that what is mounted under it later reaches the copies a VMM's file
// server holds in its own mount namespace.
func makeShared(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s: %w", dir, err)
	}
	if err := unix.Mount("", dir, "", unix.MS_SHARED, ""); err != nil {
		unix.Unmount(dir, unix.MNT_DETACH)
		return fmt.Errorf("make %s shared: %w", dir, err)
	}
	return nil
}

// removeShared unmounts everything under dir and removes it.
func removeShared(dir string) error {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := unmountRootfs(dir); err != nil {
		return err
	}
	return os.RemoveAll(dir)
}

// bindIntoPod puts a member's rootfs into the pod's shared directory, as
// the directory named by its ID.
func bindIntoPod(p *pod, id, rootfs string) (string, error) {
	dst := filepath.Join(p.shared, id)
	if err := os.Mkdir(dst, 0o755); err != nil {
		return "", fmt.Errorf("create %s: %w", dst, err)
	}
	if err := unix.Mount(rootfs, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		os.Remove(dst)
		return "", fmt.Errorf("bind the rootfs into the pod: %w", err)
	}
	return dst, nil
}

// unbindFromPod undoes bindIntoPod.
func unbindFromPod(dst string) error {
	if dst == "" {
		return nil
	}
	if err := unmountRootfs(dst); err != nil {
		return err
	}
	if err := os.Remove(dst); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// The files CRI binds into every container of a pod from the sandbox's
// directory on the host.
const (
	etcHosts      = "/etc/hosts"
	etcResolvConf = "/etc/resolv.conf"
	etcHostname   = "/etc/hostname"
	devShm        = "/dev/shm"
	termLog       = "/dev/termination-log"
)

// podBind is a host directory a pod's container binds (a Kubernetes
// volume): it reaches the VM through the pod's shared directory.
type podBind struct {
	source, destination string
	readOnly            bool
}

// memberSpec adapts a pod member's spec to the pod's VM, where the host's
// paths do not exist: namespaces given by path (the sandbox's, through
// the pid containerd knows it by) become the container's own, except the
// network, which is the VM's (the pod's); CRI's binds of /etc/hosts,
// /etc/resolv.conf and /etc/hostname become the agent's copies of those
// files, /dev/shm a tmpfs of the container's, and the termination log
// file stays in the guest. Binds of other host directories are taken out
// and returned, to be shared through the pod's directory; binds of other
// files are refused (a VM sees host files through directories).
func memberSpec(spec *specs.Spec) (agent.ContainerNetwork, []podBind, error) {
	net := agent.ContainerNetwork{ShareGuestNetwork: true}
	if spec.Linux != nil {
		var kept []specs.LinuxNamespace
		for _, ns := range spec.Linux.Namespaces {
			if ns.Type == specs.NetworkNamespace {
				continue
			}
			ns.Path = ""
			kept = append(kept, ns)
		}
		spec.Linux.Namespaces = kept
	}
	var mounts []specs.Mount
	var binds []podBind
	for _, m := range spec.Mounts {
		if !isBind(m) {
			mounts = append(mounts, m)
			continue
		}
		var dst *string
		switch m.Destination {
		case etcHosts:
			dst = &net.Hosts
		case etcResolvConf:
			dst = &net.ResolvConf
		case etcHostname:
			dst = &net.HostnameFile
		case devShm:
			mounts = append(mounts, specs.Mount{Destination: devShm, Type: "tmpfs", Source: "shm",
				Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}})
			continue
		case termLog:
			continue
		default:
			st, err := os.Stat(m.Source)
			if err != nil {
				return net, nil, fmt.Errorf("%w: bind mount source %s: %v", errdefs.ErrInvalidArgument, m.Source, err)
			}
			if !st.IsDir() {
				return net, nil, fmt.Errorf("%w: bind mounts of files are not supported: %s is not a directory (a VM shares directories; bind the directory that holds it)", errdefs.ErrNotImplemented, m.Source)
			}
			if len(binds) == maxPodBinds {
				return net, nil, fmt.Errorf("%w: more than %d bind mounts of host directories", errdefs.ErrInvalidArgument, maxPodBinds)
			}
			binds = append(binds, podBind{source: m.Source, destination: m.Destination, readOnly: slices.Contains(m.Options, "ro")})
			continue
		}
		b, err := os.ReadFile(m.Source)
		if err != nil {
			return net, nil, fmt.Errorf("%w: %s: %v", errdefs.ErrInvalidArgument, m.Destination, err)
		}
		if len(b) == 0 {
			b = []byte("\n") // empty means "keep the image's" to the agent
		}
		*dst = string(b)
	}
	spec.Mounts = mounts
	return net, binds, nil
}

// maxPodBinds bounds a pod container's host directories (they cost no
// device: they all go through the pod's share).
const maxPodBinds = 64

// bindVolumesIntoPod binds a member's host directories into the pod's
// shared directory, as <id>.v<i>, read-only ones read-only, and returns
// the agent's storages for them and the directories made (for undoing).
func bindVolumesIntoPod(p *pod, id string, binds []podBind, fstype string) (storages []agent.Storage, made []string, err error) {
	defer func() {
		if err != nil {
			for _, d := range made {
				unbindFromPod(d)
			}
			made = nil
		}
	}()
	for i, b := range binds {
		sub := fmt.Sprintf("%s.v%d", id, i)
		dst := filepath.Join(p.shared, sub)
		if err := os.Mkdir(dst, 0o755); err != nil {
			return nil, made, fmt.Errorf("create %s: %w", dst, err)
		}
		made = append(made, dst)
		if err := bindTree(b.source, dst, b.readOnly); err != nil {
			return nil, made, fmt.Errorf("bind %s into the pod: %w", b.source, err)
		}
		storages = append(storages, agent.Storage{Serial: contract.RootfsShareTag, FSType: fstype, Role: contract.RoleBind,
			MountPoint: b.destination, ReadOnly: b.readOnly, Subdir: sub})
	}
	return storages, made, nil
}

// sandboxSpecOK checks a sandbox's spec: only its network namespace may be
// given by path (the pod's, which CNI set up, and which the VM joins).
func sandboxSpecOK(spec *specs.Spec) error {
	if spec.Linux == nil {
		return nil
	}
	if i := slices.IndexFunc(spec.Linux.Namespaces, func(ns specs.LinuxNamespace) bool {
		return ns.Path != "" && ns.Type != specs.NetworkNamespace
	}); i >= 0 {
		ns := spec.Linux.Namespaces[i]
		return fmt.Errorf("%w: the sandbox's %s namespace at %s is the host's: a pod's VM cannot join it", errdefs.ErrNotImplemented, ns.Type, ns.Path)
	}
	return nil
}

// namespacePath is the path the spec gives namespace t, or "".
func namespacePath(spec *specs.Spec, t specs.LinuxNamespaceType) string {
	if spec.Linux == nil {
		return ""
	}
	for _, ns := range spec.Linux.Namespaces {
		if ns.Type == t {
			return ns.Path
		}
	}
	return ""
}

// bindTree binds the tree at src on dst, read-only from the start if asked:
// a remount to read-only afterwards would not reach the copies mount
// propagation already made (virtiofsd's), where the guest's writes go.
func bindTree(src, dst string, readOnly bool) error {
	fd, err := unix.OpenTree(unix.AT_FDCWD, src, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		return fmt.Errorf("open_tree %s: %w", src, err)
	}
	defer unix.Close(fd)
	if readOnly {
		attr := &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}
		if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, attr); err != nil {
			return fmt.Errorf("make it read-only: %w", err)
		}
	}
	if err := unix.MoveMount(fd, "", unix.AT_FDCWD, dst, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return fmt.Errorf("move_mount to %s: %w", dst, err)
	}
	return nil
}
