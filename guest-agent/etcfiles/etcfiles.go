// Package etcfiles keeps the files a container's /etc gets from the host
// (hosts, resolv.conf, hostname), as dockerd does: it writes them to a
// directory of the container's in the guest, outside the rootfs, and says
// which bind mounts put them over the rootfs's files. The container
// runtime resolves each bind's destination inside the rootfs, so a
// symlink in the image cannot send it elsewhere, and creates a missing
// file (and /etc) first, so an image without them works.
//
// It does not decide what the files say (the engine does), and it does not
// mount anything itself.
package etcfiles

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Files are the contents the host sent. An empty one keeps the image's
// file.
type Files struct {
	Hosts      string
	ResolvConf string
	Hostname   string
}

// MaxSize bounds each file: an /etc/hosts with thousands of entries is
// far below it.
const MaxSize = 1 << 20

// ErrInvalid marks files the agent refuses.
var ErrInvalid = errors.New("invalid /etc file")

// entry is one file: its name in the container's directory and where it
// goes in the container.
type entry struct {
	name, destination, content string
}

func (f Files) entries() []entry {
	var out []entry
	for _, e := range []entry{
		{"hosts", "/etc/hosts", f.Hosts},
		{"resolv.conf", "/etc/resolv.conf", f.ResolvConf},
		{"hostname", "/etc/hostname", f.Hostname},
	} {
		if e.content != "" {
			out = append(out, e)
		}
	}
	return out
}

// Check refuses files over MaxSize and files with NUL bytes, which no
// resolver or hosts parser reads as text.
func (f Files) Check() error {
	for _, e := range f.entries() {
		if len(e.content) > MaxSize {
			return fmt.Errorf("%w: %s is %d bytes, at most %d", ErrInvalid, e.destination, len(e.content), MaxSize)
		}
		if strings.IndexByte(e.content, 0) >= 0 {
			return fmt.Errorf("%w: %s contains a NUL byte", ErrInvalid, e.destination)
		}
	}
	return nil
}

// Dir holds one directory of files per container.
type Dir struct {
	// Base is the parent of the containers' directories. Default
	// /run/vmctl/etc.
	Base string
}

func (d Dir) dir(id string) string {
	base := d.Base
	if base == "" {
		base = "/run/vmctl/etc"
	}
	return filepath.Join(base, id)
}

func checkID(id string) error {
	if id == "" || id == "." || id == ".." || strings.ContainsAny(id, "/\x00") {
		return fmt.Errorf("%w: container id %q cannot name a directory", ErrInvalid, id)
	}
	return nil
}

// Mounts returns the bind mounts of the container's files, to append to
// its spec's mounts, leaving out a file whose destination mounts already
// has (the spec's own mount wins, as in dockerd). They come after every
// other mount: a volume on /etc must not hide them.
func (d Dir) Mounts(id string, f Files, mounts []specs.Mount) []specs.Mount {
	var out []specs.Mount
	for _, e := range f.entries() {
		taken := false
		for _, m := range mounts {
			if m.Destination == e.destination {
				taken = true
			}
		}
		if !taken {
			out = append(out, specs.Mount{
				Destination: e.destination, Type: "bind",
				Source: filepath.Join(d.dir(id), e.name), Options: []string{"rbind"},
			})
		}
	}
	return out
}

// Write writes the container's files, replacing what an earlier create
// of the same ID may have left.
func (d Dir) Write(id string, f Files) error {
	if err := checkID(id); err != nil {
		return err
	}
	if err := f.Check(); err != nil {
		return err
	}
	entries := f.entries()
	if len(entries) == 0 {
		return nil
	}
	dir := d.dir(id)
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("clear %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.name)
		if err := os.WriteFile(p, []byte(e.content), 0o644); err != nil {
			return fmt.Errorf("write %s for %s: %w", p, e.destination, err)
		}
	}
	return nil
}

// Remove deletes the container's files. Safe to call again, and for a
// container that had none.
func (d Dir) Remove(id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	return os.RemoveAll(d.dir(id))
}
