package qemu

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmctl/vmctl/engine/sandbox"
)

// saveTemplate boots a template VM of cfg's shape with two disks, talks to
// its guest once, saves it and destroys it.
func saveTemplate(t *testing.T, d *Driver, cfg sandbox.Config) []byte {
	t.Helper()
	tmpl := cfg
	tmpl.Template = true
	tmpl.Restore = nil
	tmpl.ID += "-tmpl"
	tmpl.StateDir += "-tmpl"
	tmpl.Disks = []sandbox.Disk{{}, {}}
	sb, err := d.Start(ctxTimeout(t, 30*time.Second), tmpl)
	if err != nil {
		t.Fatalf("Start template: %v", err)
	}
	defer sb.Destroy()
	conn, err := sb.DialAgent(ctxTimeout(t, 30*time.Second))
	if err != nil {
		t.Fatalf("DialAgent: %v", err)
	}
	r := bufio.NewReader(conn)
	echo(t, conn, r, "before save")
	conn.Close()
	var state bytes.Buffer
	start := time.Now()
	if err := d.Save(ctxTimeout(t, 30*time.Second), sb, &state); err != nil {
		t.Fatalf("Save: %v", err)
	}
	t.Logf("saved %d bytes in %v", state.Len(), time.Since(start))
	if err := sb.Destroy(); err != nil {
		t.Fatal(err)
	}
	assertNoStateDir(t, tmpl.StateDir)
	return state.Bytes()
}

// TestSaveRestore saves a template VM and starts two VMs from it side by
// side, each with disks of its own: both continue the template's guest
// (the same PID 1, still serving), and once their drivers are rebound see
// their own disks' serials and read-only flags.
func TestSaveRestore(t *testing.T) {
	d, cfg := needVM(t)
	state := saveTemplate(t, d, cfg)

	type restored struct {
		sb   sandbox.Sandbox
		conn io.ReadWriter
		r    *bufio.Reader
		want string
	}
	var vms []restored
	for i, names := range [][2]string{{"image-a", "rw-a"}, {"image-b", "rw-b"}} {
		c := cfg
		c.ID = cfg.ID + "-" + names[0]
		c.StateDir = cfg.StateDir + "-" + names[0]
		dir := filepath.Dir(cfg.StateDir)
		for j, serial := range names {
			p := filepath.Join(dir, serial+".img")
			if err := os.WriteFile(p, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(p, int64(4+i)<<20); err != nil {
				t.Fatal(err)
			}
			c.Disks = append(c.Disks, sandbox.Disk{Path: p, Serial: serial, ReadOnly: j == 0})
		}
		c.Restore = bytes.NewReader(state)
		c.ConsoleLog = c.StateDir + ".console"
		t.Cleanup(func() {
			if t.Failed() {
				b, _ := os.ReadFile(c.ConsoleLog)
				t.Logf("console of %s:\n%s", c.ID, b)
			}
		})
		start := time.Now()
		sb, err := d.Start(ctxTimeout(t, 30*time.Second), c)
		if err != nil {
			t.Fatalf("Start from saved state: %v", err)
		}
		t.Cleanup(func() { sb.Destroy() })
		conn, err := sb.DialAgent(ctxTimeout(t, 30*time.Second))
		if err != nil {
			t.Fatalf("DialAgent: %v", err)
		}
		t.Cleanup(func() { conn.Close() })
		r := bufio.NewReader(conn)
		echo(t, conn, r, "after restore")
		t.Logf("restore to the first echoed byte: %v", time.Since(start))
		vms = append(vms, restored{sb, conn, r, "vda:" + names[0] + ":1 vdb:" + names[1] + ":0\n"})
	}
	for _, v := range vms {
		ask := func(q string) string {
			t.Helper()
			io.WriteString(v.conn, q+"\n")
			got, err := v.r.ReadString('\n')
			if err != nil {
				t.Fatalf("%s: %v", q, err)
			}
			return got
		}
		if got := ask("rebind"); got != "ok\n" {
			t.Fatalf("rebind = %q", got)
		}
		if got := ask("disks"); got != v.want {
			t.Errorf("disks after rebind = %q, want %q", got, v.want)
		}
		if err := v.sb.Destroy(); err != nil {
			t.Error(err)
		}
	}
}

// damagedReader serves a saved state and then fails at its end, as a
// reader that checks a digest does.
type damagedReader struct{ r io.Reader }

func (d *damagedReader) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	if err == io.EOF {
		return n, errors.New("digest mismatch")
	}
	return n, err
}

// TestRestoreRefusesDamagedState: a state whose reader fails at the end,
// a truncated one and garbage each fail Start with nothing left behind and
// no guest run.
func TestRestoreRefusesDamagedState(t *testing.T) {
	d, cfg := needVM(t)
	state := saveTemplate(t, d, cfg)
	for _, tc := range []struct {
		name string
		r    io.Reader
		want string
	}{
		{"reader fails", &damagedReader{bytes.NewReader(state)}, "digest mismatch"},
		{"truncated", bytes.NewReader(state[:len(state)/2]), "qemu"},
		{"garbage", strings.NewReader(strings.Repeat("not a state", 1000)), "qemu"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := cfg
			c.StateDir = cfg.StateDir + "-" + strings.ReplaceAll(tc.name, " ", "")
			dir := filepath.Dir(cfg.StateDir)
			for _, serial := range []string{"a", "b"} {
				p := filepath.Join(dir, serial+".img")
				os.WriteFile(p, make([]byte, 1<<20), 0o644)
				c.Disks = append(c.Disks, sandbox.Disk{Path: p, Serial: serial})
			}
			c.Restore = tc.r
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			sb, err := d.Start(ctx, c)
			if err == nil {
				sb.Destroy()
				t.Fatal("Start succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Start: %v, want it to mention %q", err, tc.want)
			}
			assertNoQEMUFor(t, c.StateDir)
			assertNoStateDir(t, c.StateDir)
		})
	}
}

// TestTemplateAndRestoreConfigChecks: a config that is both, or that has
// shares, is refused before anything starts.
func TestTemplateAndRestoreConfigChecks(t *testing.T) {
	d, cfg := needVM(t)
	both := cfg
	both.Template, both.Restore = true, strings.NewReader("")
	shares := cfg
	shares.Template = true
	shares.Shares = []sandbox.Share{{Path: t.TempDir(), Tag: "s"}}
	for _, c := range []sandbox.Config{both, shares} {
		if sb, err := d.Start(context.Background(), c); err == nil {
			sb.Destroy()
			t.Errorf("Start(%+v) succeeded", c)
		}
		assertNoStateDir(t, c.StateDir)
	}
	if err := d.CanRestore(shares); err == nil {
		t.Error("CanRestore accepts shares")
	}
}

// guestMemory is a memfd for a guest of memMiB, as the snapshot store makes.
func guestMemory(t *testing.T, memMiB int) *os.File {
	t.Helper()
	fd, err := unix.MemfdCreate("vmctl-test-memory", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "memory")
	t.Cleanup(func() { f.Close() })
	if err := f.Truncate(int64(memMiB) << 20); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestSaveRestoreSharedMemory: a template whose RAM is a memfd saves a
// state without it; once the memfd is sealed, two VMs restored from it run
// side by side on its pages (mapped privately), and nothing they do
// changes it.
func TestSaveRestoreSharedMemory(t *testing.T) {
	d, cfg := needVM(t)
	cfg.MemoryMiB = 128
	cfg.Memory = guestMemory(t, cfg.MemoryMiB)
	state := saveTemplate(t, d, cfg)
	if len(state) > 4<<20 {
		t.Errorf("state of %d bytes: the RAM went into it", len(state))
	}
	if _, err := unix.FcntlInt(cfg.Memory.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_WRITE|unix.F_SEAL_SEAL); err != nil {
		t.Fatalf("seal the template's memory (is a writable mapping left?): %v", err)
	}
	before := digestFile(t, cfg.Memory)
	for i, name := range []string{"a", "b"} {
		c := cfg
		c.ID = cfg.ID + "-" + name
		c.StateDir = cfg.StateDir + "-" + name
		for j, serial := range []string{"img-" + name, "rw-" + name} {
			p := filepath.Join(filepath.Dir(cfg.StateDir), serial+".img")
			if err := os.WriteFile(p, make([]byte, (1+i)<<20), 0o644); err != nil {
				t.Fatal(err)
			}
			c.Disks = append(c.Disks, sandbox.Disk{Path: p, Serial: serial, ReadOnly: j == 0})
		}
		c.Restore = bytes.NewReader(state)
		sb, err := d.Start(ctxTimeout(t, 30*time.Second), c)
		if err != nil {
			t.Fatalf("Start from saved state: %v", err)
		}
		defer sb.Destroy()
		conn, err := sb.DialAgent(ctxTimeout(t, 30*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		r := bufio.NewReader(conn)
		echo(t, conn, r, "after restore")
		io.WriteString(conn, "rebind\n")
		if got, _ := r.ReadString('\n'); got != "ok\n" {
			t.Fatalf("rebind = %q", got)
		}
		io.WriteString(conn, "disks\n")
		if got, _ := r.ReadString('\n'); got != "vda:img-"+name+":1 vdb:rw-"+name+":0\n" {
			t.Errorf("disks = %q", got)
		}
		// QEMU maps the memfd privately: its smaps names it.
		smaps, _ := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", sb.Pid()))
		if !bytes.Contains(smaps, []byte("memfd:vmctl-test-memory")) {
			t.Error("the restored QEMU does not map the template's memory")
		}
	}
	if after := digestFile(t, cfg.Memory); after != before {
		t.Error("the restored guests changed the template's memory")
	}
	if _, err := cfg.Memory.WriteAt([]byte{1}, 0); err == nil {
		t.Error("the sealed memory takes writes")
	}
}

func digestFile(t *testing.T, f *os.File) [32]byte {
	t.Helper()
	b := make([]byte, 0)
	st, _ := f.Stat()
	b = make([]byte, st.Size())
	if _, err := f.ReadAt(b, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}
