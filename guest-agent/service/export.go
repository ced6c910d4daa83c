package service

// Exports: a container's changes as a layer tar, written to its writable
// disk and read by the host in chunks (guest-agent/changes).

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agent "github.com/vmctl/vmctl/api/agent/v1"
	"github.com/vmctl/vmctl/guest-agent/archive"
	"github.com/vmctl/vmctl/guest-agent/changes"
	"github.com/vmctl/vmctl/guest-agent/container"
)

// maxExportChunk bounds one ReadExport answer.
const maxExportChunk = 1 << 20

var exportID = regexp.MustCompile(`^[0-9a-f]{16}$`)

// exports keeps each container's snapshot of its previous export.
type exports struct {
	mu    sync.Mutex
	snaps map[string]changes.Snapshot
}

func (s *Service) exportDir(id string) string {
	return filepath.Join(s.cfg.Storage.Dir(id), "writable", "exports")
}

// ExportChanges writes the container's changes as a layer tar.
func (s *Service) ExportChanges(ctx context.Context, req *agent.ExportChangesRequest) (*agent.ExportChangesResponse, error) {
	id := req.GetContainerId()
	if err := container.ValidID(id); err != nil {
		return nil, toStatus(err)
	}
	upper := filepath.Join(s.cfg.Storage.Dir(id), "writable", "upper")
	if _, err := os.Stat(upper); err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "container %s has no writable layer to export", id)
	}
	s.exports.mu.Lock()
	defer s.exports.mu.Unlock()
	if s.exports.snaps == nil {
		s.exports.snaps = map[string]changes.Snapshot{}
	}
	var prev changes.Snapshot
	if req.GetSincePrevious() {
		prev = s.exports.snaps[id]
	}
	f, name, err := s.newExportFile(id)
	if err != nil {
		return nil, err
	}
	next, n, err := changes.Write(f, upper, prev)
	if err == nil {
		err = f.Sync()
	}
	size, _ := f.Seek(0, io.SeekCurrent)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return nil, toStatus(err)
	}
	s.exports.snaps[id] = next
	return &agent.ExportChangesResponse{ExportId: name, Size: uint64(size), Entries: uint32(n)}, nil
}

func (s *Service) exportPath(containerID, id string) (string, error) {
	if err := container.ValidID(containerID); err != nil {
		return "", toStatus(err)
	}
	if !exportID.MatchString(id) {
		return "", invalid("export_id %q is not one ExportChanges gave", id)
	}
	return filepath.Join(s.exportDir(containerID), id), nil
}

// ReadExport returns a chunk of an export.
func (s *Service) ReadExport(ctx context.Context, req *agent.ReadExportRequest) (*agent.ReadExportResponse, error) {
	p, err := s.exportPath(req.GetContainerId(), req.GetExportId())
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, status.Errorf(codes.NotFound, "no export %s of container %s", req.GetExportId(), req.GetContainerId())
	}
	if err != nil {
		return nil, toStatus(err)
	}
	defer f.Close()
	n := min(int(req.GetMaxLen()), maxExportChunk)
	if n <= 0 {
		n = maxExportChunk
	}
	buf := make([]byte, n)
	got, err := f.ReadAt(buf, int64(req.GetOffset()))
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, toStatus(err)
	}
	return &agent.ReadExportResponse{Data: buf[:got], Eof: errors.Is(err, io.EOF)}, nil
}

// DropExport removes an export.
func (s *Service) DropExport(ctx context.Context, req *agent.ExportRequest) (*agent.Empty, error) {
	p, err := s.exportPath(req.GetContainerId(), req.GetExportId())
	if err != nil {
		return nil, err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, toStatus(err)
	}
	return &agent.Empty{}, nil
}

// rootfs opens the container's root file system.
func (s *Service) rootfs(id string) (*os.Root, error) {
	if err := container.ValidID(id); err != nil {
		return nil, toStatus(err)
	}
	// The container's own view, through its init: the volumes bound into
	// it, and the /etc/hosts, resolv.conf and hostname bound over the
	// image's, are where the container sees them. A lookup from this
	// directory crosses the mounts of the init's mount namespace.
	if p, err := s.cfg.Runtime.Process(id, ""); err == nil && p != nil && !p.Exited() {
		if root, err := os.OpenRoot(fmt.Sprintf("/proc/%d/root", p.Pid)); err == nil {
			if !p.Exited() { // so the pid was still the init's when opened
				return root, nil
			}
			root.Close()
		}
	}
	// An init that is gone (or none yet): the rootfs as mounted.
	root, err := os.OpenRoot(filepath.Join(s.cfg.Storage.Dir(id), "rootfs"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, status.Errorf(codes.NotFound, "no container %s", id)
	}
	if err != nil {
		return nil, toStatus(err)
	}
	return root, nil
}

func pathStat(st archive.Stat) *agent.PathStat {
	return &agent.PathStat{Name: st.Name, Size: st.Size, Mode: uint32(st.Mode), MtimeUnixNano: st.Mtime.UnixNano(), LinkTarget: st.LinkTarget}
}

func archiveStatus(err error) error {
	switch {
	case errors.Is(err, archive.ErrNotFound), errors.Is(err, fs.ErrNotExist):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, archive.ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	}
	return toStatus(err)
}

// StatPath describes a path of the container's root file system.
func (s *Service) StatPath(ctx context.Context, req *agent.PathRequest) (*agent.PathStat, error) {
	root, err := s.rootfs(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	defer root.Close()
	st, _, err := archive.StatPath(root, req.GetPath())
	if err != nil {
		return nil, archiveStatus(err)
	}
	return pathStat(st), nil
}

// ArchivePath writes a tar of a path into scratch space.
func (s *Service) ArchivePath(ctx context.Context, req *agent.PathRequest) (*agent.ArchivePathResponse, error) {
	id := req.GetContainerId()
	root, err := s.rootfs(id)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	st, rel, err := archive.StatPath(root, req.GetPath())
	if err != nil {
		return nil, archiveStatus(err)
	}
	f, name, err := s.newExportFile(id)
	if err != nil {
		return nil, err
	}
	err = archive.Write(f, root, rel, st.Name)
	size, _ := f.Seek(0, io.SeekCurrent)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return nil, archiveStatus(err)
	}
	return &agent.ArchivePathResponse{ExportId: name, Size: uint64(size), Stat: pathStat(st)}, nil
}

// newExportFile makes a file for an export in the container's scratch
// space (on its writable disk).
func (s *Service) newExportFile(id string) (*os.File, string, error) {
	dir := s.exportDir(id)
	if _, err := os.Stat(filepath.Dir(dir)); err != nil {
		return nil, "", status.Errorf(codes.FailedPrecondition, "container %s has no writable disk for scratch space", id)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, "", toStatus(err)
	}
	var b [8]byte
	rand.Read(b[:])
	name := hex.EncodeToString(b[:])
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		return nil, "", toStatus(err)
	}
	return f, name, nil
}

// WriteUpload appends to an upload.
func (s *Service) WriteUpload(ctx context.Context, req *agent.WriteUploadRequest) (*agent.Empty, error) {
	p, err := s.exportPath(req.GetContainerId(), req.GetUploadId())
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Dir(filepath.Dir(p))); err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "container %s has no writable disk for scratch space", req.GetContainerId())
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return nil, toStatus(err)
	}
	flags := os.O_WRONLY | os.O_APPEND
	if req.GetOffset() == 0 {
		flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	f, err := os.OpenFile(p, flags, 0o600)
	if err != nil {
		return nil, archiveStatus(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, toStatus(err)
	}
	if uint64(fi.Size()) != req.GetOffset() {
		return nil, invalid("upload %s holds %d bytes, not %d", req.GetUploadId(), fi.Size(), req.GetOffset())
	}
	if _, err := f.Write(req.GetData()); err != nil {
		return nil, toStatus(err)
	}
	return &agent.Empty{}, nil
}

// ExtractUpload unpacks an upload into a directory and removes it.
func (s *Service) ExtractUpload(ctx context.Context, req *agent.ExtractUploadRequest) (*agent.Empty, error) {
	p, err := s.exportPath(req.GetContainerId(), req.GetUploadId())
	if err != nil {
		return nil, err
	}
	defer os.Remove(p)
	root, err := s.rootfs(req.GetContainerId())
	if err != nil {
		return nil, err
	}
	defer root.Close()
	f, err := os.Open(p)
	if err != nil {
		return nil, archiveStatus(err)
	}
	defer f.Close()
	dir, err := archive.Resolve(root, req.GetPath(), true)
	if err != nil {
		return nil, archiveStatus(err)
	}
	if err := archive.Extract(f, root, dir, archive.Options{KeepOwners: req.GetKeepOwners(), NoOverwriteDirNonDir: req.GetNoOverwriteDirNonDir()}); err != nil {
		return nil, archiveStatus(err)
	}
	return &agent.Empty{}, nil
}
