package snapshot

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmctl/vmctl/engine/sandbox"
	"github.com/vmctl/vmctl/engine/sandbox/qemu"
	"github.com/vmctl/vmctl/internal/initramfs"
)

// These tests save and restore real VMs: the project's guest kernel under
// QEMU, with the QEMU driver's test init (engine/sandbox/qemu/testdata/
// echoinit), which echoes lines on the agent's port. They skip only when
// QEMU or the kernel is missing.

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..")
}

var testEnv struct {
	dir, initrd string
	err         error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if testEnv.dir != "" {
		os.RemoveAll(testEnv.dir)
	}
	os.Exit(code)
}

// fixture is a store and a driver, with a config of a VM with two disks.
type fixture struct {
	store  *Store
	drv    *qemu.Driver
	cfg    sandbox.Config
	readys atomic.Int32
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	if _, err := exec.LookPath(qemu.Binary); err != nil {
		t.Skipf("%s not installed", qemu.Binary)
	}
	kernel := filepath.Join(repoRoot(), "bin", "guest", "vmlinuz")
	if k := os.Getenv("VMCTL_GUEST_KERNEL"); k != "" {
		kernel = k
	}
	if _, err := os.Stat(kernel); err != nil {
		t.Skipf("guest kernel %s not built (make kernel)", kernel)
	}
	if testEnv.dir == "" && testEnv.err == nil {
		testEnv.dir, testEnv.err = os.MkdirTemp("", "vmctl-snapshot-test")
		if testEnv.err == nil {
			bin := filepath.Join(testEnv.dir, "echoinit")
			cmd := exec.Command("go", "build", "-o", bin, "./engine/sandbox/qemu/testdata/echoinit")
			cmd.Dir = repoRoot()
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				testEnv.err = fmt.Errorf("go build echoinit: %v: %s", err, out)
			} else {
				testEnv.initrd = filepath.Join(testEnv.dir, "initramfs.img")
				testEnv.err = initramfs.WriteFile(testEnv.initrd, bin)
			}
		}
	}
	if testEnv.err != nil {
		t.Fatal(testEnv.err)
	}
	drv, err := qemu.New(qemu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	// Short: unix socket paths are limited.
	dir, err := os.MkdirTemp("", "vms")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	f := &fixture{drv: drv}
	f.store = New(filepath.Join(dir, "snapshots"), "test", func(ctx context.Context, sb sandbox.Sandbox) error {
		f.readys.Add(1)
		conn, err := sb.DialAgent(ctx)
		if err != nil {
			return err
		}
		defer conn.Close()
		return echo(conn, bufio.NewReader(conn), "ready")
	})
	f.cfg = sandbox.Config{ID: "t", Kernel: kernel, Initrd: testEnv.initrd, VCPUs: 1, MemoryMiB: 128, StateDir: filepath.Join(dir, "vm")}
	for _, serial := range []string{"image", "rw"} {
		p := filepath.Join(dir, serial+".img")
		if err := os.WriteFile(p, make([]byte, 1<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		f.cfg.Disks = append(f.cfg.Disks, sandbox.Disk{Path: p, Serial: serial})
	}
	return f
}

func echo(c io.ReadWriter, r *bufio.Reader, line string) error {
	if d, ok := c.(interface{ SetDeadline(time.Time) error }); ok {
		d.SetDeadline(time.Now().Add(30 * time.Second))
	}
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return err
	}
	got, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	if got != line+"\n" {
		return fmt.Errorf("echo = %q, want %q", got, line)
	}
	return nil
}

// run starts the fixture's VM through the store, checks that the guest
// answers, and ends it.
func (f *fixture) run(t *testing.T) (restored bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sb, restored, err := f.store.Start(ctx, f.drv, f.cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	defer sb.Destroy()
	conn, err := sb.DialAgent(ctx)
	if err != nil {
		t.Fatalf("DialAgent: %v", err)
	}
	defer conn.Close()
	if err := echo(conn, bufio.NewReader(conn), "hello"); err != nil {
		t.Fatalf("guest: %v", err)
	}
	return restored
}

func (f *fixture) meta(t *testing.T) (Meta, string) {
	t.Helper()
	dir := filepath.Join(f.store.Dir(), Shape(f.drv.Name(), f.cfg))
	m, err := readMeta(dir)
	if err != nil {
		t.Fatal(err)
	}
	return m, dir
}

// TestSaveOnceRestoreAfter: the first run saves the state, the next ones
// restore it without saving again, and List shows it.
func TestSaveOnceRestoreAfter(t *testing.T) {
	f := newFixture(t)
	for i := range 3 {
		if !f.run(t) {
			t.Fatalf("run %d was not restored", i)
		}
	}
	if n := f.readys.Load(); n != 1 {
		t.Errorf("saved %d times, want once", n)
	}
	m, dir := f.meta(t)
	if m.Size == 0 || m.Kernel.SHA256 == "" || m.Initrd.SHA256 == "" || m.Format != format {
		t.Errorf("meta = %+v", m)
	}
	// The RAM is in the memory file, not the state.
	if m.MemoryMiB != 128 || m.MemoryBytes == 0 || m.Size > 4<<20 {
		t.Errorf("meta = %+v: want the RAM apart from a small state", m)
	}
	if st, err := os.Stat(filepath.Join(dir, memoryName)); err != nil || st.Size() != 128<<20 {
		t.Errorf("memory file: %v", err)
	}
	// Another process (a new store on the same directory) loads it.
	f.store = New(f.store.Dir(), "test", f.store.ready)
	if !f.run(t) || f.readys.Load() != 1 {
		t.Error("a new store did not restore from the saved memory")
	}
	saved, err := f.store.List()
	if err != nil || len(saved) != 1 || saved[0].Shape != "qemu-1cpu-128m-2disk-0nic" {
		t.Errorf("List() = %+v, %v", saved, err)
	}
}

// TestRefusedStatesAreSavedAgain damages the saved state, or makes it
// another's, in each way a state can be wrong: each is refused and saved
// again, and the run goes on from the new one.
func TestRefusedStatesAreSavedAgain(t *testing.T) {
	f := newFixture(t)
	f.run(t)
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, dir string)
	}{
		{"truncated", func(t *testing.T, dir string) {
			st, _ := os.Stat(filepath.Join(dir, stateName))
			if err := os.Truncate(filepath.Join(dir, stateName), st.Size()/2); err != nil {
				t.Fatal(err)
			}
		}},
		{"a byte changed", func(t *testing.T, dir string) {
			// The same size: only the CRC can tell, once the whole state
			// was fed to QEMU (which may well load it).
			p := filepath.Join(dir, stateName)
			fh, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer fh.Close()
			st, _ := fh.Stat()
			b := make([]byte, 1)
			fh.ReadAt(b, st.Size()-4096)
			b[0] ^= 0x40
			if _, err := fh.WriteAt(b, st.Size()-4096); err != nil {
				t.Fatal(err)
			}
		}},
		{"memory damaged", func(t *testing.T, dir string) {
			// A byte of a page with data: only the memory's CRC can tell,
			// when a process loads the file.
			p := filepath.Join(dir, memoryName)
			fh, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer fh.Close()
			off, err := unix.Seek(int(fh.Fd()), 0, unix.SEEK_DATA)
			if err != nil {
				t.Fatal(err)
			}
			b := make([]byte, 1)
			fh.ReadAt(b, off+100)
			b[0] ^= 0x01
			if _, err := fh.WriteAt(b, off+100); err != nil {
				t.Fatal(err)
			}
			f.store = New(f.store.Dir(), "test", f.store.ready)
		}},
		{"memory file gone", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, memoryName))
			f.store = New(f.store.Dir(), "test", f.store.ready)
		}},
		{"another build", func(t *testing.T, dir string) {
			// The same files and QEMU, another engine build: a process of
			// it finds the state someone else's.
			f.store = New(f.store.Dir(), "test-2", f.store.ready)
		}},
		{"another identity", func(t *testing.T, dir string) {
			editMeta(t, dir, func(m *Meta) { m.Identity = strings.Repeat("0", 64) })
		}},
		{"an older format", func(t *testing.T, dir string) {
			editMeta(t, dir, func(m *Meta) { m.Format = format - 1 })
		}},
		{"garbage meta", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, metaName), []byte("{"), 0o600)
		}},
		{"another kernel", func(t *testing.T, dir string) {
			// A kernel with other bytes (a trailing page the boot loader
			// ignores) at another path: its digest differs.
			b, err := os.ReadFile(f.cfg.Kernel)
			if err != nil {
				t.Fatal(err)
			}
			k := filepath.Join(t.TempDir(), "vmlinuz")
			if err := os.WriteFile(k, append(b, make([]byte, 4096)...), 0o644); err != nil {
				t.Fatal(err)
			}
			f.cfg.Kernel = k
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, dir := f.meta(t)
			saves := f.readys.Load()
			tc.change(t, dir)
			if !f.run(t) {
				t.Fatal("run not restored")
			}
			if f.readys.Load() != saves+1 {
				t.Errorf("saved %d times, want once", f.readys.Load()-saves)
			}
			after, _ := f.meta(t)
			if !after.Saved.After(before.Saved) {
				t.Errorf("meta saved %v, not after %v", after.Saved, before.Saved)
			}
			// And the new state is used as is.
			if !f.run(t) || f.readys.Load() != saves+1 {
				t.Error("the new state was not used")
			}
		})
	}
	if _, err := os.Stat(filepath.Join(f.store.Dir(), Shape(f.drv.Name(), f.cfg), stateName+".tmp")); err == nil {
		t.Error("a temporary state file was left")
	}
}

func editMeta(t *testing.T, dir string, edit func(*Meta)) {
	t.Helper()
	m, err := readMeta(dir)
	if err != nil {
		t.Fatal(err)
	}
	edit(&m)
	b, _ := json.Marshal(m)
	if err := os.WriteFile(filepath.Join(dir, metaName), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestSharesBoot: a VM with shares cannot be restored, so it boots, and
// nothing is saved.
func TestSharesBoot(t *testing.T) {
	f := newFixture(t)
	f.cfg.Shares = []sandbox.Share{{Path: t.TempDir(), Tag: "s"}}
	if Eligible(f.drv, f.cfg) == nil {
		t.Fatal("Eligible accepts shares")
	}
	if os.Geteuid() != 0 {
		t.Skip("virtiofsd needs root")
	}
	if f.run(t) {
		t.Error("restored a VM with shares")
	}
	if n := f.readys.Load(); n != 0 {
		t.Errorf("saved %d times", n)
	}
}

// TestSaveFailureBoots: when no guest can be saved (here the template's
// guest never gets ready), the run boots instead, and nothing half-saved
// is left.
func TestSaveFailureBoots(t *testing.T) {
	f := newFixture(t)
	f.store = New(f.store.Dir(), "test", func(ctx context.Context, sb sandbox.Sandbox) error {
		return errors.New("the agent does not answer")
	})
	if f.run(t) {
		t.Error("restored, though nothing could be saved")
	}
	dir := filepath.Join(f.store.Dir(), Shape(f.drv.Name(), f.cfg))
	for _, name := range []string{stateName, stateName + ".tmp", memoryName, memoryName + ".tmp", metaName} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			t.Errorf("%s left after a failed save", name)
		}
	}
}
