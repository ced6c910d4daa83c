package service

// Exports: a container's changes as a layer tar, written to its writable
// disk and read by the host in chunks (guest-agent/changes).

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agent "github.com/vmctl/vmctl/api/agent/v1"
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
	dir := s.exportDir(id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, toStatus(err)
	}
	var b [8]byte
	rand.Read(b[:])
	name := hex.EncodeToString(b[:])
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, toStatus(err)
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
