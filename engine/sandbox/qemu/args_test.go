package qemu

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/vmctl/vmctl/engine/sandbox"
)

// argValues returns the values that follow each occurrence of flag.
func argValues(args []string, flag string) []string {
	var out []string
	for i := 0; i+1 < len(args); i++ {
		if args[i] == flag {
			out = append(out, args[i+1])
		}
	}
	return out
}

func TestBuildArgs(t *testing.T) {
	base := launch{
		id: "c1", accel: "tcg",
		cfg:     sandbox.Config{ID: "c1", Kernel: "/k/vmlinuz", Initrd: "/k/initrd", StateDir: "/run/v/c1"},
		pidFile: "/run/v/c1/qemu.pid",
	}
	tests := []struct {
		name   string
		modify func(l *launch)
		flag   string
		want   []string
	}{
		{"tcg cpu", nil, "-cpu", []string{"max"}},
		{"kvm cpu", func(l *launch) { l.accel = "kvm" }, "-cpu", []string{"host"}},
		{"accel", func(l *launch) { l.accel = "kvm" }, "-accel", []string{"kvm"}},
		{"machine", nil, "-M", []string{"microvm,acpi=off"}},
		{"default sizes", nil, "-smp", []string{"1"}},
		{"default memory", nil, "-m", []string{"512"}},
		{"sizes", func(l *launch) { l.cfg.VCPUs, l.cfg.MemoryMiB = 2, 256 }, "-m", []string{"256"}},
		{"vcpus", func(l *launch) { l.cfg.VCPUs = 2 }, "-smp", []string{"2"}},
		{"kernel", nil, "-kernel", []string{"/k/vmlinuz"}},
		{"initrd", nil, "-initrd", []string{"/k/initrd"}},
		{"no initrd", func(l *launch) { l.cfg.Initrd = "" }, "-initrd", nil},
		{"cmdline tcg", func(l *launch) { l.cfg.KernelArgs = []string{"vmctl.debug=1", "init=/x"} }, "-append",
			[]string{"console=ttyS0 reboot=t panic=-1 quiet rcupdate.rcu_expedited=1 tsc=reliable nolapic_timer vmctl.debug=1 init=/x"}},
		{"cmdline tcg smp", func(l *launch) { l.cfg.VCPUs = 2 }, "-append",
			[]string{"console=ttyS0 reboot=t panic=-1 quiet rcupdate.rcu_expedited=1 tsc=reliable"}},
		{"cmdline kvm", func(l *launch) { l.accel = "kvm" }, "-append",
			[]string{"console=ttyS0 reboot=t panic=-1 quiet rcupdate.rcu_expedited=1 tsc=reliable"}},
		{"serial discarded", nil, "-serial", []string{"null"}},
		{"serial to file", func(l *launch) { l.consoleLog = "/logs/a,b.log" }, "-serial", []string{"chardev:console"}},
		{"console chardev escaped", func(l *launch) { l.consoleLog = "/logs/a,b.log" }, "-chardev", []string{
			"file,id=console,path=/logs/a,,b.log",
			"socket,id=qmp,fd=3,server=on,wait=off",
			"socket,id=agent,fd=4,server=on,wait=off",
		}},
		{"agent port", nil, "-device", []string{"virtio-serial-device,max_ports=2", "virtserialport,id=agentport,chardev=agent,name=vmctl.agent"}},
		{"qmp", nil, "-mon", []string{"chardev=qmp,mode=control"}},
		{"disks", func(l *launch) {
			l.cfg.Disks = []sandbox.Disk{
				{Path: "/img/rootfs.ext4", Serial: "rootfs", ReadOnly: true},
				{Path: "/c/rw,1.ext4", Serial: "rw"},
				{Path: "/c/nosr.ext4"},
			}
		}, "-drive", []string{
			"file=/img/rootfs.ext4,if=none,id=disk0,format=raw,cache=writeback,werror=report,rerror=report,readonly=on",
			"file=/c/rw,,1.ext4,if=none,id=disk1,format=raw,cache=writeback,werror=report,rerror=report,readonly=off,discard=unmap",
			"file=/c/nosr.ext4,if=none,id=disk2,format=raw,cache=writeback,werror=report,rerror=report,readonly=off,discard=unmap",
		}},
		{"no NICs", nil, "-netdev", nil},
		{"NIC taps", func(l *launch) { l.cfg.NICs = twoNICs }, "-netdev", []string{
			"tap,id=net0,ifname=vt0123456789ab,script=no,downscript=no",
			"tap,id=net1,ifname=vt1,script=no,downscript=no",
		}},
		{"NIC taps with vhost-net", func(l *launch) { l.cfg.NICs, l.vhostNet = twoNICs[:1], true }, "-netdev", []string{
			"tap,id=net0,ifname=vt0123456789ab,script=no,downscript=no,vhost=on",
		}},
		{"NIC devices", func(l *launch) { l.cfg.NICs = twoNICs }, "-device", []string{
			"virtio-serial-device,max_ports=2", "virtserialport,id=agentport,chardev=agent,name=vmctl.agent",
			"virtio-net-device,netdev=net0,mac=02:42:ac:1e:00:02,host_mtu=1400",
			"virtio-net-device,netdev=net1,mac=02:00:00:00:00:09",
		}},
		{"name escaped", func(l *launch) { l.id = "a,b" }, "-name", []string{"guest=a,,b"}},
		{"pidfile", nil, "-pidfile", []string{"/run/v/c1/qemu.pid"}},
		{"seccomp unjailed", nil, "-sandbox", []string{"on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"}},
		{"seccomp jailed", func(l *launch) { l.jail = &jailSpec{how: dropRunas, root: "/j", uid: 7, gid: 8} }, "-sandbox",
			[]string{"on,obsolete=deny,elevateprivileges=allow,spawn=deny,resourcecontrol=deny"}},
		{"not jailed", nil, "-runas", nil},
		{"runas", func(l *launch) { l.jail = &jailSpec{how: dropRunas, root: "/run/v/c1/jail", uid: 7, gid: 8} }, "-runas", []string{"7:8"}},
		{"chroot", func(l *launch) { l.jail = &jailSpec{how: dropRunas, root: "/run/v/c1/jail", uid: 7, gid: 8} }, "-chroot", []string{"/run/v/c1/jail"}},
		{"run-with", func(l *launch) { l.jail = &jailSpec{how: dropRunWith, root: "/run/v,1/jail", uid: 7, gid: 8} }, "-run-with",
			[]string{"chroot=/run/v,,1/jail,user=7:8"}},
		{"run-with has no runas", func(l *launch) { l.jail = &jailSpec{how: dropRunWith, root: "/j", uid: 7, gid: 8} }, "-runas", nil},
	}
	defer func(f func() int64) { hostTSC = f }(hostTSC)
	hostTSC = func() int64 { return 0 }
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := base
			if tt.modify != nil {
				tt.modify(&l)
			}
			args := buildArgs(l)
			if got := argValues(args, tt.flag); !slices.Equal(got, tt.want) {
				t.Errorf("buildArgs() %s = %q, want %q", tt.flag, got, tt.want)
			}
		})
	}
}

var twoNICs = []sandbox.NIC{
	{Tap: "vt0123456789ab", MAC: net.HardwareAddr{0x02, 0x42, 0xac, 0x1e, 0, 2}, MTU: 1400},
	{Tap: "vt1", MAC: net.HardwareAddr{0x02, 0, 0, 0, 0, 9}},
}

func TestBuildArgsFixedFlags(t *testing.T) {
	args := buildArgs(launch{id: "x", accel: "tcg", cfg: sandbox.Config{Kernel: "/k"}})
	for _, f := range []string{"-nodefaults", "-no-user-config", "-nographic", "-no-reboot", "-S"} {
		if !slices.Contains(args, f) {
			t.Errorf("buildArgs() lacks %s: %q", f, args)
		}
	}
	disks := buildArgs(launch{id: "x", accel: "tcg", cfg: sandbox.Config{Kernel: "/k", Disks: []sandbox.Disk{{Path: "/d", Serial: "s1"}}}})
	if got := argValues(disks, "-device"); !slices.Contains(got, "virtio-blk-device,drive=disk0,serial=s1") {
		t.Errorf("disk device missing: %q", got)
	}
}

// parseDrop picks the privilege-dropping options from QEMU's -help: 7.2's
// text (Debian 12), 9.1's and a build with neither.
func TestParseDrop(t *testing.T) {
	qemu72 := `-no-user-config
                do not load default user-provided config files at startup
-chroot dir     chroot to dir just before starting the VM
-runas user     change to user id user just before starting the VM
                user can be numeric uid:gid instead
-sandbox on[,obsolete=allow|deny][,elevateprivileges=allow|deny|children]
`
	qemu91 := `-run-with [async-teardown=on|off][,chroot=dir][user=username|uid:gid]
                Set miscellaneous QEMU process lifecycle options:
                async-teardown=on enables asynchronous teardown (Linux only)
                chroot=dir chroot to dir just before starting the VM
                user=username switch to the specified user before starting the VM
                user=uid:gid ditto, but use specified user-ID and group-ID instead
-runas user     change to user id user just before starting the VM
`
	chrootOnly := `-run-with [async-teardown=on|off][,chroot=dir]
                chroot=dir chroot to dir just before starting the VM
-netdev user,id=str[,user=x]
`
	for _, tt := range []struct {
		name, help string
		want       privDrop
	}{
		{"7.2", qemu72, dropRunas},
		{"9.1", qemu91, dropRunWith},
		{"run-with without user, user= elsewhere", chrootOnly, dropNone},
		{"runas without chroot", "-runas user  change to user id\n", dropNone},
		{"empty", "", dropNone},
	} {
		if got := parseDrop(tt.help); got != tt.want {
			t.Errorf("%s: parseDrop = %d, want %d", tt.name, got, tt.want)
		}
	}
}

func TestValidateSerial(t *testing.T) {
	tests := []struct {
		serial string
		ok     bool
	}{
		{"", true},
		{"rootfs", true},
		{"vol-data_1.v2", true},
		{strings.Repeat("a", 20), true},
		{strings.Repeat("a", 21), false},
		{"a,b", false},
		{"a b", false},
		{"a=b", false},
		{"ünï", false},
		{"a\x00", false},
	}
	for _, tt := range tests {
		err := validateSerial(tt.serial)
		if (err == nil) != tt.ok {
			t.Errorf("validateSerial(%q) = %v, want ok=%v", tt.serial, err, tt.ok)
		}
	}
}

func TestValidateConfig(t *testing.T) {
	dir := t.TempDir()
	kernel := filepath.Join(dir, "vmlinuz")
	if err := os.WriteFile(kernel, []byte("k"), 0o644); err != nil {
		t.Fatal(err)
	}
	good := sandbox.Config{ID: "c1", Kernel: kernel, StateDir: filepath.Join(dir, "state")}
	tests := []struct {
		name   string
		modify func(c *sandbox.Config)
		want   string // "" means valid
	}{
		{"valid", nil, ""},
		{"no id", func(c *sandbox.Config) { c.ID = "" }, "ID is empty"},
		{"no state dir", func(c *sandbox.Config) { c.StateDir = "" }, "StateDir is empty"},
		{"relative state dir", func(c *sandbox.Config) { c.StateDir = "state" }, "state dir path \"state\" is not absolute"},
		{"missing kernel", func(c *sandbox.Config) { c.Kernel = filepath.Join(dir, "nope") }, "kernel " + filepath.Join(dir, "nope") + " does not exist"},
		{"kernel is a dir", func(c *sandbox.Config) { c.Kernel = dir }, "is not a regular file"},
		{"missing initrd", func(c *sandbox.Config) { c.Initrd = filepath.Join(dir, "nope") }, "initrd " + filepath.Join(dir, "nope") + " does not exist"},
		{"relative console", func(c *sandbox.Config) { c.ConsoleLog = "c.log" }, "console log path"},
		{"bad kernel arg", func(c *sandbox.Config) { c.KernelArgs = []string{"a\nb"} }, "control character"},
		{"long cmdline", func(c *sandbox.Config) { c.KernelArgs = []string{strings.Repeat("x", 2000)} }, "kernel command line too long"},
		{"relative disk", func(c *sandbox.Config) { c.Disks = []sandbox.Disk{{Path: "d.img"}} }, "disk path \"d.img\" is not absolute"},
		{"bad serial", func(c *sandbox.Config) { c.Disks = []sandbox.Disk{{Path: "/d", Serial: "a,b"}} }, "not allowed"},
		{"long serial", func(c *sandbox.Config) {
			c.Disks = []sandbox.Disk{{Path: "/d", Serial: strings.Repeat("s", 21)}}
		}, "virtio-blk allows 20"},
		{"duplicate serial", func(c *sandbox.Config) {
			c.Disks = []sandbox.Disk{{Path: "/d", Serial: "s"}, {Path: "/e", Serial: "s"}}
		}, "used twice"},
		{"too many disks", func(c *sandbox.Config) { c.Disks = make([]sandbox.Disk, 24) }, "at most 23"},
		{"NICs", func(c *sandbox.Config) { c.NICs = twoNICs }, ""},
		{"too many disks and NICs", func(c *sandbox.Config) {
			c.Disks = make([]sandbox.Disk, 22)
			for i := range c.Disks {
				c.Disks[i] = sandbox.Disk{Path: "/d" + strconv.Itoa(i), Serial: "s" + strconv.Itoa(i)}
			}
			c.NICs = twoNICs
		}, "22 disks, 0 shares and 2 NICs, the microvm machine takes at most 23 devices"},
		{"bad NIC", func(c *sandbox.Config) { c.NICs = []sandbox.NIC{{Tap: "vt,0", MAC: twoNICs[0].MAC}} }, "not allowed"},
		{"NIC without MAC", func(c *sandbox.Config) { c.NICs = []sandbox.NIC{{Tap: "vt0"}} }, "not a unicast Ethernet address"},
		{"NICs on one tap", func(c *sandbox.Config) {
			c.NICs = []sandbox.NIC{twoNICs[0], {Tap: twoNICs[0].Tap, MAC: twoNICs[1].MAC}}
		}, "two NICs share"},
		{"NICs with one MAC", func(c *sandbox.Config) {
			c.NICs = []sandbox.NIC{twoNICs[0], {Tap: "vt9", MAC: twoNICs[0].MAC}}
		}, "two NICs share"},
		{"socket path too long", func(c *sandbox.Config) { c.StateDir = "/" + strings.Repeat("d", 100) }, "unix sockets allow 107: use a shorter StateDir"},
		{"socket path at the limit", func(c *sandbox.Config) { c.StateDir = "/" + strings.Repeat("d", 107-1-len("/agent.sock")) }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := good
			if tt.modify != nil {
				tt.modify(&c)
			}
			err := validateConfig(c)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("validateConfig() = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("validateConfig() = %v, want error containing %q", err, tt.want)
			case err != nil && strings.Contains(err.Error(), "\n"):
				t.Errorf("validateConfig() error is not one line: %q", err)
			}
		})
	}
}

func TestNewErrors(t *testing.T) {
	dir := t.TempDir()
	notExec := filepath.Join(dir, "qemu")
	if err := os.WriteFile(notExec, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		opts Options
		path string
		want string
	}{
		{"not in PATH", Options{}, dir, "qemu-system-x86_64 not found: install qemu-system-x86"},
		{"not executable", Options{Binary: notExec}, "", "is not an executable file"},
		{"missing binary", Options{Binary: filepath.Join(dir, "none")}, "", "is not an executable file"},
		{"bad accel", Options{Binary: "/bin/sh", Accel: "hvf"}, "", `qemu accelerator "hvf": use kvm or tcg`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.path != "" {
				t.Setenv("PATH", tt.path)
			}
			_, err := New(tt.opts)
			if err == nil || err.Error() != tt.want && !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New(%+v) error = %v, want %q", tt.opts, err, tt.want)
			}
		})
	}
	d, err := New(Options{Binary: "/bin/sh", Accel: "tcg", Unjailed: true})
	if err != nil || d.Name() != "qemu" || d.Accel() != "tcg" || d.Jailed() {
		t.Errorf("New(valid) = %v, %v", d, err)
	}
	if os.Geteuid() == 0 {
		// Root jails QEMU, and a binary that cannot drop privileges is refused.
		_, err := New(Options{Binary: "/bin/sh", Accel: "tcg"})
		if err == nil || !strings.Contains(err.Error(), "cannot be jailed") {
			t.Errorf("New(root, no -runas) error = %v, want one saying it cannot be jailed", err)
		}
	}
}

func TestCmdlineCarriesKnownTSCRateUnderTCG(t *testing.T) {
	defer func(f func() int64) { hostTSC = f }(hostTSC)
	hostTSC = func() int64 { return 2599998 }
	if got := kernelCmdline("tcg", 2, nil); !strings.Contains(got, "tsc_early_khz=2599998") {
		t.Errorf("tcg cmdline %q lacks tsc_early_khz", got)
	}
	if got := kernelCmdline("kvm", 2, nil); strings.Contains(got, "tsc_early_khz") {
		t.Errorf("kvm cmdline %q has tsc_early_khz: kvm-clock needs none", got)
	}
}

func TestParseTSCkHz(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{
		{"processor\t: 0\ncpu MHz\t\t: 2599.998\nflags\t\t: fpu tsc tsc_known_freq sse\n\nprocessor\t: 1\ncpu MHz\t\t: 1.0\n", 2599998},
		{"processor\t: 0\ncpu MHz\t\t: 2599.998\nflags\t\t: fpu tsc sse\n", 0},
		{"flags\t\t: tsc_known_freq\ncpu MHz\t\t: garbage\n", 0},
		{"", 0},
	}
	for _, tt := range tests {
		if got := parseTSCkHz(tt.in); got != tt.want {
			t.Errorf("parseTSCkHz(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

// A share is a vhost-user-fs device on the share's virtiofsd socket, with
// guest memory a shared memfd; with ShareFS 9p, QEMU's own 9p device and
// private memory.
func TestBuildArgsShares(t *testing.T) {
	cfg := sandbox.Config{Kernel: "/k", MemoryMiB: 256, StateDir: "/run/v/x",
		Shares: []sandbox.Share{{Path: "/srv/a,b", Tag: "vmctl-bind0", ReadOnly: true}}}
	args := buildArgs(launch{id: "x", accel: "tcg", cfg: cfg, shareFS: sandbox.ShareVirtioFS})
	want := []string{
		"-object", "memory-backend-memfd,id=mem,size=256M,share=on",
		"-M", "microvm,acpi=off,memory-backend=mem",
		"-chardev", "socket,id=fs0,path=/run/v/x/fs0.sock",
		"-device", "vhost-user-fs-device,chardev=fs0,tag=vmctl-bind0",
	}
	for i := 0; i < len(want); i += 2 {
		if !slices.Contains(argValues(args, want[i]), want[i+1]) {
			t.Errorf("virtio-fs args lack %s %s: %q", want[i], want[i+1], args)
		}
	}
	args = buildArgs(launch{id: "x", accel: "tcg", cfg: cfg, shareFS: sandbox.Share9P})
	if got := argValues(args, "-fsdev"); !slices.Equal(got, []string{"local,id=fs0,path=/srv/a,,b,security_model=passthrough,multidevs=remap,readonly=on"}) {
		t.Errorf("9p -fsdev = %q", got)
	}
	if slices.Contains(args, "-object") || !slices.Contains(argValues(args, "-M"), "microvm,acpi=off") {
		t.Errorf("9p args share guest memory: %q", args)
	}
	// Without shares, memory stays private.
	if args := buildArgs(launch{id: "x", accel: "tcg", cfg: sandbox.Config{Kernel: "/k"}}); slices.Contains(args, "-object") {
		t.Errorf("no shares, yet a memory backend: %q", args)
	}
}
