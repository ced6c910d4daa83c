package vmm

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmctl/vmctl/api/agent/contract"
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
		NICs:   []sandbox.NIC{{Tap: "vt0123456789ab", MAC: net.HardwareAddr{0x02, 0x42, 0xac, 0x1e, 0, 2}, MTU: 1400}},
		Shares: []sandbox.Share{{Path: "/srv/a", Tag: "vmctl-bind0"}, {Path: "/srv/b", Tag: "vmctl-bind1", ReadOnly: true}},
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
		"-tap":       {"vt0123456789ab"},
		"-mac":       {"02:42:ac:1e:00:02"},
		"-mtu":       {"1400"},
		"-share":     {"/srv/a,tag=vmctl-bind0", "/srv/b,tag=vmctl-bind1,ro"},
	}
	values := func(args []string, flag string) []string {
		var got []string
		for i := 0; i+1 < len(args); i++ {
			if args[i] == flag {
				got = append(got, args[i+1])
			}
		}
		return got
	}
	for flag, w := range want {
		if got := values(args, flag); !slices.Equal(got, w) {
			t.Errorf("Args() %s = %q, want %q", flag, got, w)
		}
	}
	// Without an MTU the guest keeps its default; without a NIC there is
	// no network device at all.
	cfg.NICs[0].MTU = 0
	if got := values(Args(cfg, "/s/vmm.sock", "/s/vsock.sock", ""), "-mtu"); got != nil {
		t.Errorf("Args() without an MTU: -mtu %q", got)
	}
	// A template's NIC is detached, with the template address.
	tmpl := cfg
	tmpl.Template, tmpl.NICs = true, []sandbox.NIC{{}}
	if got := Args(tmpl, "/s/vmm.sock", "/s/vsock.sock", ""); !slices.Contains(got, "-detached-nic") || slices.Contains(got, "-tap") ||
		!slices.Equal(values(got, "-mac"), []string{sandbox.TemplateMAC(0).String()}) {
		t.Errorf("Args() of a template with a NIC = %q", got)
	}
	cfg.NICs = nil
	if got := Args(cfg, "/s/vmm.sock", "/s/vsock.sock", ""); slices.Contains(got, "-tap") || slices.Contains(got, "-mac") {
		t.Errorf("Args() without NICs = %q", got)
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
		{"one NIC", func(c *sandbox.Config) { c.NICs = []sandbox.NIC{{Tap: "vt0", MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}}} }, ""},
		{"two NICs", func(c *sandbox.Config) {
			c.NICs = []sandbox.NIC{{Tap: "vt0", MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}}, {Tap: "vt1", MAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}}}
		}, "one NIC; this one has 2"},
		{"share", func(c *sandbox.Config) { c.Shares = []sandbox.Share{{Path: dir, Tag: "t0"}} }, ""},
		{"share of a file", func(c *sandbox.Config) { c.Shares = []sandbox.Share{{Path: kernel, Tag: "t0"}} }, "is not a directory"},
		{"share with a bad tag", func(c *sandbox.Config) { c.Shares = []sandbox.Share{{Path: dir, Tag: "a,b"}} }, "not allowed"},
		{"five shares", func(c *sandbox.Config) {
			for i := range 5 {
				c.Shares = append(c.Shares, sandbox.Share{Path: dir, Tag: fmt.Sprint("t", i)})
			}
		}, "4 shared directories"},
		{"bad NIC", func(c *sandbox.Config) {
			c.NICs = []sandbox.NIC{{Tap: "vt0", MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, MTU: 9}}
		}, "MTU 9"},
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

// fakeVsock plays the VMM's side of the hybrid vsock handshake: answer
// gives the reply to a CONNECT, "" to close the connection as the VMM does
// while nothing in the guest listens.
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
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil {
					return
				}
				reply := answer(strings.TrimSuffix(strings.TrimPrefix(line, "CONNECT "), "\n"))
				if reply == "" {
					return
				}
				io.WriteString(c, reply)
				io.Copy(io.Discard, c)
			}(c)
		}
	}()
	return sock
}

// DialAgent retries while the guest boots and hands over the agent's
// stream from its first byte.
func TestDialAgentRetriesUntilTheAgentListens(t *testing.T) {
	var attempts atomic.Int32
	sock := fakeVsock(t, func(port string) string {
		if port != strconv.Itoa(contract.VsockPort) || attempts.Add(1) < 3 {
			return ""
		}
		return "OK 1073741824\nhello"
	})
	v := &vm{vsockSock: sock, exited: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := v.DialAgent(ctx)
	if err != nil {
		t.Fatalf("DialAgent: %v", err)
	}
	defer conn.Close()
	buf := make([]byte, 5)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "hello" {
		t.Errorf("first stream bytes = %q, %v; want hello", buf, err)
	}
	if n := attempts.Load(); n != 3 {
		t.Errorf("DialAgent connected on attempt %d, want 3 (two refusals first)", n)
	}
}

// A VM that ended stops the retries with its exit detail; a ctx that ends
// stops them with the last attempt's error.
func TestDialAgentGivesUp(t *testing.T) {
	sock := fakeVsock(t, func(string) string { return "" })
	ended := &vm{vsockSock: sock, exited: make(chan struct{}), exit: sandbox.Exit{Detail: "guest panicked"}}
	close(ended.exited)
	if _, err := ended.DialAgent(context.Background()); err == nil || !strings.Contains(err.Error(), "ended before its agent answered: guest panicked") {
		t.Errorf("DialAgent to an ended VM: %v", err)
	}
	running := &vm{vsockSock: sock, exited: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := running.DialAgent(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "last error: vsock port 1024: ") {
		t.Errorf("DialAgent while the agent never listens: %v; want the deadline and the last attempt's error", err)
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

func TestEnv(t *testing.T) {
	for _, tc := range []struct{ in, want []string }{
		{[]string{"PATH=/bin"}, []string{"PATH=/bin", "GODEBUG=disablethp=1"}},
		{[]string{"GODEBUG=gctrace=1", "A=b"}, []string{"GODEBUG=gctrace=1,disablethp=1", "A=b"}},
		{[]string{"GODEBUG=disablethp=0"}, []string{"GODEBUG=disablethp=0"}}, // the user's own choice
	} {
		in := slices.Clone(tc.in)
		if got := Env(in); !slices.Equal(got, tc.want) || !slices.Equal(in, tc.in) {
			t.Errorf("Env(%q) = %q (input now %q), want %q and the input unchanged", tc.in, got, in, tc.want)
		}
	}
}
