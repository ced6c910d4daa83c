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

// docker cp's calls: a path described and archived out, a tar uploaded in
// chunks and unpacked into a directory.
func TestCopyCalls(t *testing.T) {
	s := newTestService(t, t.TempDir(), t.TempDir())
	ctx := context.Background()
	id := "cp1"
	rootfs := filepath.Join(s.cfg.Storage.Dir(id), "rootfs")
	for _, d := range []string{filepath.Join(rootfs, "etc"), filepath.Join(s.cfg.Storage.Dir(id), "writable")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(rootfs, "etc", "conf"), []byte("conf"), 0o600)
	os.Symlink("/etc", filepath.Join(rootfs, "link"))
	st, err := s.StatPath(ctx, &agent.PathRequest{ContainerId: id, Path: "/link/conf"})
	if err != nil || st.Name != "conf" || st.Size != 4 {
		t.Fatalf("StatPath = %+v, %v", st, err)
	}
	if _, err := s.StatPath(ctx, &agent.PathRequest{ContainerId: id, Path: "/nope"}); code(err) != codes.NotFound {
		t.Errorf("StatPath of nothing: %v", err)
	}
	a, err := s.ArchivePath(ctx, &agent.PathRequest{ContainerId: id, Path: "/link/"})
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.ReadExport(ctx, &agent.ReadExportRequest{ContainerId: id, ExportId: a.ExportId, MaxLen: 1 << 20})
	if err != nil || uint64(len(r.Data)) != a.Size {
		t.Fatalf("ReadExport: %d bytes of %d, %v", len(r.Data), a.Size, err)
	}
	tr := tar.NewReader(bytes.NewReader(r.Data))
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
	}
	// "/link/" follows the symlink: the directory it names, under the
	// name it has there.
	if len(names) != 2 || names[0] != "etc/" || names[1] != "etc/conf" {
		t.Errorf("archive of /link/: %v", names)
	}
	a, err = s.ArchivePath(ctx, &agent.PathRequest{ContainerId: id, Path: "/link"})
	if err != nil || a.Stat.LinkTarget != "/etc" {
		t.Errorf("archive of /link: %+v, %v", a, err)
	}

	var up bytes.Buffer
	tw := tar.NewWriter(&up)
	tw.WriteHeader(&tar.Header{Name: "new.txt", Typeflag: tar.TypeReg, Mode: 0o644, Size: 3})
	tw.Write([]byte("new"))
	tw.Close()
	data := up.Bytes()
	upload := "00000000000000aa"
	if _, err := s.WriteUpload(ctx, &agent.WriteUploadRequest{ContainerId: id, UploadId: upload, Offset: 0, Data: data[:100]}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.WriteUpload(ctx, &agent.WriteUploadRequest{ContainerId: id, UploadId: upload, Offset: 50, Data: data[100:]}); code(err) != codes.InvalidArgument {
		t.Errorf("an upload chunk at the wrong offset: %v", err)
	}
	if _, err := s.WriteUpload(ctx, &agent.WriteUploadRequest{ContainerId: id, UploadId: upload, Offset: 100, Data: data[100:]}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ExtractUpload(ctx, &agent.ExtractUploadRequest{ContainerId: id, UploadId: upload, Path: "/link"}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(rootfs, "etc", "new.txt")); err != nil || string(b) != "new" {
		t.Errorf("the uploaded file: %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(s.exportDir(id), upload)); !os.IsNotExist(err) {
		t.Errorf("the upload was not removed: %v", err)
	}
}
