package service

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/grpc/codes"

	agent "github.com/vmctl/vmctl/api/agent/v1"
)

// The host reads a container's changes in chunks: all of them, then only
// those since the previous export; exports go when dropped.
func TestExportChanges(t *testing.T) {
	s := newTestService(t, t.TempDir(), t.TempDir())
	ctx := context.Background()
	id := "exp1"
	if _, err := s.ExportChanges(ctx, &agent.ExportChangesRequest{ContainerId: id}); code(err) != codes.FailedPrecondition {
		t.Errorf("export without a writable layer: %v, want FailedPrecondition", err)
	}
	upper := filepath.Join(s.cfg.Storage.Dir(id), "writable", "upper")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(upper, "etc"), 0o755))
	must(os.WriteFile(filepath.Join(upper, "etc", "conf"), bytes.Repeat([]byte("x"), 3<<20), 0o644))
	read := func(exp *agent.ExportChangesResponse) map[string]int64 {
		t.Helper()
		var all []byte
		for {
			r, err := s.ReadExport(ctx, &agent.ReadExportRequest{ContainerId: id, ExportId: exp.ExportId, Offset: uint64(len(all)), MaxLen: 1 << 20})
			must(err)
			all = append(all, r.Data...)
			if r.Eof {
				break
			}
		}
		if uint64(len(all)) != exp.Size {
			t.Errorf("read %d bytes of an export of %d", len(all), exp.Size)
		}
		out := map[string]int64{}
		tr := tar.NewReader(bytes.NewReader(all))
		for {
			h, err := tr.Next()
			if err == io.EOF {
				return out
			}
			must(err)
			out[h.Name] = h.Size
		}
	}
	exp, err := s.ExportChanges(ctx, &agent.ExportChangesRequest{ContainerId: id})
	must(err)
	if got := read(exp); exp.Entries != 2 || got["etc/conf"] != 3<<20 || len(got) != 2 {
		t.Errorf("first export: %d entries %v", exp.Entries, got)
	}
	must(os.Remove(filepath.Join(upper, "etc", "conf")))
	must(os.WriteFile(filepath.Join(upper, "new"), []byte("n"), 0o644))
	exp2, err := s.ExportChanges(ctx, &agent.ExportChangesRequest{ContainerId: id, SincePrevious: true})
	must(err)
	got := read(exp2)
	if _, ok := got["etc/.wh.conf"]; !ok || got["new"] != 1 {
		t.Errorf("second export: %v", got)
	}
	if _, ok := got["etc/conf"]; ok {
		t.Errorf("second export repeats the first: %v", got)
	}
	for _, e := range []*agent.ExportChangesResponse{exp, exp2} {
		if _, err := s.DropExport(ctx, &agent.ExportRequest{ContainerId: id, ExportId: e.ExportId}); err != nil {
			t.Error(err)
		}
	}
	if left, _ := os.ReadDir(s.exportDir(id)); len(left) != 0 {
		t.Errorf("exports left after DropExport: %d", len(left))
	}
	if _, err := s.ReadExport(ctx, &agent.ReadExportRequest{ContainerId: id, ExportId: "../../etc/passwd"}); code(err) != codes.InvalidArgument {
		t.Errorf("ReadExport of a path: %v", err)
	}
	if _, err := s.ReadExport(ctx, &agent.ReadExportRequest{ContainerId: id, ExportId: exp.ExportId}); code(err) != codes.NotFound {
		t.Errorf("ReadExport of a dropped export: %v", err)
	}
}
