package vmm

import (
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmctl/vmctl/engine/sandbox"
)

func TestArgs(t *testing.T) {
	cfg := sandbox.Config{
		Kernel: "/k/vmlinuz", Initrd: "/k/initrd", VCPUs: 2, MemoryMiB: 384,
		KernelArgs: []string{"vmctl.debug=1"},
		Disks: []sandbox.Disk{
			{Path: "/d/image.ext4", Serial: "vmctl-image", ReadOnly: true},
			{Path: "/d/rw.ext4", Serial: "vmctl-rw"},
		},
	}
	args := Args(cfg, "/s/vmm.sock", "/s/vsock.sock", "/s/console.log")
	want := map[string][]string{
		"-kernel":    {"/k/vmlinuz"},
		"-initrd":    {"/k/initrd"},
		"-cmdline":   {"console=ttyS0 reboot=k panic=-1 quiet vmctl.debug=1"},
		"-vcpus":     {"2"},
		"-memory":    {"384"},
		"-vsock-uds": {"/s/vsock.sock"},
		"-vsock-cid": {"3"},
		"-control":   {"/s/vmm.sock"},
		"-console":   {"/s/console.log"},
		"-disk":      {"/d/image.ext4,serial=vmctl-image,ro", "/d/rw.ext4,serial=vmctl-rw"},
	}
	for flag, w := range want {
		var got []string
		for i := 0; i+1 < len(args); i++ {
			if args[i] == flag {
				got = append(got, args[i+1])
			}
		}
		if !slices.Equal(got, w) {
			t.Errorf("Args() %s = %q, want %q", flag, got, w)
		}
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinuz")
	if err := os.WriteFile(kernel, []byte("k"), 0o644); err != nil {
		t.Fatal(err)
	}
	ok := sandbox.Config{ID: "c1", Kernel: kernel, StateDir: "/run/v/c1"}
	tests := []struct {
		name   string
		modify func(*sandbox.Config)
		want   string
	}{
		{"ok", nil, ""},
		{"missing kernel", func(c *sandbox.Config) { c.Kernel = "/nonexistent" }, "guest kernel not found at /nonexistent"},
		{"relative state dir", func(c *sandbox.Config) { c.StateDir = "run" }, "absolute StateDir"},
		{"long state dir", func(c *sandbox.Config) { c.StateDir = "/" + strings.Repeat("x", 100) }, "too long for unix sockets"},
		{"comma in disk", func(c *sandbox.Config) { c.Disks = []sandbox.Disk{{Path: "/a,b"}} }, "commas"},
		{"long serial", func(c *sandbox.Config) { c.Disks = []sandbox.Disk{{Path: "/a", Serial: strings.Repeat("s", 21)}} }, "20 bytes"},
	}
	for _, tt := range tests {
		cfg := ok
		if tt.modify != nil {
			tt.modify(&cfg)
		}
		err := validate(cfg)
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%s: validate() = %v, want %q", tt.name, err, tt.want)
		}
	}
}

// fakeVsock plays the VMM's side of the hybrid vsock handshake.
func fakeVsock(t *testing.T, answer func(port string) string) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "v.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				line, err := readLine(c, 64)
				if err != nil {
					return
				}
				reply := answer(strings.TrimPrefix(line, "CONNECT "))
				if reply == "" {
					return // the guest refused: the VMM closes the connection
				}
				io.WriteString(c, reply)
				io.Copy(c, c) // echo
			}(c)
		}
	}()
	return sock
}

func TestDialVsock(t *testing.T) {
	sock := fakeVsock(t, func(port string) string {
		if port != "1024" {
			return ""
		}
		return "OK 1073741824\nhello"
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := dialVsock(ctx, sock, 1024)
	if err != nil {
		t.Fatalf("dialVsock: %v", err)
	}
	defer conn.Close()
	// Bytes after the OK line belong to the stream.
	buf := make([]byte, 5)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "hello" {
		t.Errorf("first stream bytes = %q, %v; want hello", buf, err)
	}
	if _, err := dialVsock(ctx, sock, 52); err == nil {
		t.Errorf("dialVsock to a port nobody listens on succeeded")
	}
	bad := fakeVsock(t, func(string) string { return "NOPE\n" })
	if _, err := dialVsock(ctx, bad, 1024); err == nil || !strings.Contains(err.Error(), "unexpected answer") {
		t.Errorf("dialVsock with a bad answer: %v", err)
	}
}

// On a host whose /dev/kvm cannot run full guests, vmctl-vmm refuses at
// once and the driver passes its one line on.
func TestStartFailsFastWithoutFullKVM(t *testing.T) {
	if ok, _ := sandbox.KVMCapability(); ok {
		t.Skip("this host's /dev/kvm runs full guests; the refusal is for hosts without")
	}
	bin := filepath.Join(t.TempDir(), Binary)
	build := exec.Command("go", "build", "-o", bin, "github.com/vmctl/vmctl/cmd/vmctl-vmm")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build vmctl-vmm: %v\n%s", err, out)
	}
	d, err := New(Options{Binary: bin})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinuz")
	os.WriteFile(kernel, []byte("not a kernel"), 0o644)
	state, err := os.MkdirTemp("", "vmmtest")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(state)
	start := time.Now()
	_, err = d.Start(context.Background(), sandbox.Config{ID: "t", Kernel: kernel, StateDir: filepath.Join(state, "vm")})
	if err == nil || !strings.Contains(err.Error(), "hypervisor kvm:") || strings.Contains(err.Error(), "\n") {
		t.Errorf("Start = %v, want one line starting with the kvm refusal", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("refusal took %s", d)
	}
	if _, err := os.Stat(filepath.Join(state, "vm")); !os.IsNotExist(err) {
		t.Errorf("state dir left behind: %v", err)
	}
}
