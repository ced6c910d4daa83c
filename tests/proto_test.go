package tests

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// TestGeneratedContractsAreCurrent regenerates the Go code of api/ with the
// pinned generators (scripts/proto.sh, what `make proto` runs) into a
// temporary directory and compares it with the checked-in files: a .proto
// edited without `make proto`, a generated file edited by hand, or one left
// behind by a removed .proto fails here.
func TestGeneratedContractsAreCurrent(t *testing.T) {
	if _, err := exec.LookPath("protoc"); err != nil {
		if os.Getenv("VMCTL_E2E") != "" {
			t.Fatal("protoc is missing: `make test` installs protobuf-compiler (scripts/install-deps.sh)")
		}
		t.Skip("protoc is missing: install protobuf-compiler (scripts/install-deps.sh)")
	}
	root := repoRoot(t)
	out := t.TempDir()
	cmd := exec.Command("bash", filepath.Join(root, "scripts", "proto.sh"), out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/proto.sh: %v\n%s", err, b)
	}
	api := filepath.Join(root, "api")
	want, got := generatedFiles(t, out), generatedFiles(t, api)
	if len(want) == 0 {
		t.Fatal("scripts/proto.sh generated nothing")
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("api/ holds generated files %v; its .proto files generate %v: run `make proto`", got, want)
	}
	for _, name := range want {
		fresh, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		checkedIn, err := os.ReadFile(filepath.Join(api, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(fresh, checkedIn) {
			t.Errorf("api/%s differs from what its .proto generates (first difference at line %d): run `make proto`",
				name, firstDifferentLine(fresh, checkedIn))
		}
	}
}

// generatedFiles lists the *.pb.go files under dir, relative to it.
func generatedFiles(t *testing.T, dir string) []string {
	t.Helper()
	var names []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".pb.go") {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		names = append(names, filepath.ToSlash(rel))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(names)
	return names
}

// firstDifferentLine is the 1-based number of the first line where a and b
// differ.
func firstDifferentLine(a, b []byte) int {
	la, lb := bytes.Split(a, []byte("\n")), bytes.Split(b, []byte("\n"))
	for i := range min(len(la), len(lb)) {
		if !bytes.Equal(la[i], lb[i]) {
			return i + 1
		}
	}
	return min(len(la), len(lb)) + 1
}
