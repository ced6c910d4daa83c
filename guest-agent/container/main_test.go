package container

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/vmctl/vmctl/guest-agent/internal/testenv"
	"github.com/vmctl/vmctl/guest-agent/reaper"
)

// testReaper reaps every child of the test binary. Tests here must not use
// exec.Cmd.Wait.
var testReaper *reaper.Reaper

// TestMain doubles as the container init: the runtime re-executes the test
// binary with InitArg, as the agent re-executes itself.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == InitArg {
		InitMain()
	}
	testReaper = reaper.New()
	go testReaper.Run()
	os.Exit(m.Run())
}

func requireRoot(t *testing.T) { testenv.RequireRoot(t) }

func busyboxRoot(t *testing.T) string { return testenv.BusyboxRoot(t, "") }

func newTestRuntime(t *testing.T) *Runtime {
	t.Helper()
	rt, err := New(Config{Reaper: testReaper, CgroupRoot: testenv.CgroupRoot(t)})
	if err != nil {
		t.Fatal(err)
	}
	return rt
}

// testSpec is a container running args in all supported namespaces.
func testSpec(args ...string) *specs.Spec {
	return &specs.Spec{
		Version:  specs.Version,
		Hostname: "box",
		Process: &specs.Process{
			Args: args,
			Env:  []string{"PATH=/bin"},
			Cwd:  "/",
		},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev"}},
		},
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.UTSNamespace}, {Type: specs.IPCNamespace},
				{Type: specs.MountNamespace}, {Type: specs.NetworkNamespace},
			},
			MaskedPaths:   []string{"/proc/kcore"},
			ReadonlyPaths: []string{"/proc/sys"},
		},
	}
}

// mustValidate is ValidateSpec for specs a test knows to be valid.
func mustValidate(t *testing.T, s *specs.Spec) ValidSpec {
	t.Helper()
	valid, err := ValidateSpec(s)
	if err != nil {
		t.Fatalf("ValidateSpec: %v", err)
	}
	return valid
}

var testSeq int

// run creates and starts a container and registers its removal.
func run(t *testing.T, rt *Runtime, spec *specs.Spec) string {
	t.Helper()
	testSeq++
	id := fmt.Sprintf("test-%d-%d", os.Getpid(), testSeq)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := rt.Create(ctx, id, mustValidate(t, spec), busyboxRoot(t)); err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := rt.Remove(ctx, id); err != nil {
			t.Errorf("Remove: %v", err)
		}
	})
	if err := rt.Start(ctx, id); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return id
}

// readAll reads a stream until EOF.
func readAll(t *testing.T, p *Process, which Stream) string {
	t.Helper()
	var buf bytes.Buffer
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		data, _, eof, err := p.Read(which, 4096, uint64(buf.Len()))
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		buf.Write(data)
		if eof {
			return buf.String()
		}
	}
	t.Fatal("no EOF within 30s")
	return ""
}

func wait(t *testing.T, p *Process) Exit {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := p.Wait(ctx)
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	return e
}

func TestErrorKindsSurviveTheSyncSocket(t *testing.T) {
	for _, kind := range []error{ErrNotFound, ErrPermission, ErrInvalid, ErrExists, ErrState} {
		err := kindError(kindName(errorf(kind, "x")), "x")
		if !errors.Is(err, kind) {
			t.Errorf("kind %v did not survive: got %v", kind, err)
		}
	}
	if err := kindError("internal", "boom"); errors.Is(err, ErrNotFound) || err.Error() != "boom" {
		t.Errorf("internal error = %v", err)
	}
	if !strings.Contains(kindName(errors.New("plain")), "internal") {
		t.Error("plain error not internal")
	}
}
