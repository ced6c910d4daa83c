package kernelconfig

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// option is one line of a Kconfig fragment; Value is "n" for "# CONFIG_X is not set".
type option struct {
	Name  string
	Value string
	Line  int
}

var (
	setLine   = regexp.MustCompile(`^(CONFIG_[A-Za-z0-9_]+)=(.+)$`)
	unsetLine = regexp.MustCompile(`^# (CONFIG_[A-Za-z0-9_]+) is not set$`)
)

// parseFragment reads a fragment in the .config syntax that merge_config.sh and
// build-kernel.sh's check accept. Anything else is an error, so a typo cannot
// turn an option into a silently ignored comment.
func parseFragment(r io.Reader) ([]option, error) {
	var opts []option
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if m := setLine.FindStringSubmatch(line); m != nil {
			opts = append(opts, option{Name: m[1], Value: m[2], Line: n})
			continue
		}
		if m := unsetLine.FindStringSubmatch(line); m != nil {
			opts = append(opts, option{Name: m[1], Value: "n", Line: n})
			continue
		}
		trimmed := strings.TrimSpace(line)
		if trimmed == "" {
			continue
		}
		// A comment that mentions CONFIG_ is most likely a mistyped "is not set".
		if strings.HasPrefix(trimmed, "#") && !strings.Contains(trimmed, "CONFIG_") {
			continue
		}
		return nil, fmt.Errorf("line %d: %q is neither CONFIG_X=value, \"# CONFIG_X is not set\" nor a comment", n, line)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read fragment: %w", err)
	}
	return opts, nil
}

func TestParseFragment(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []option
		wantErr bool
	}{
		{name: "empty", in: "", want: nil},
		{name: "set and unset", in: "CONFIG_A=y\n# CONFIG_B is not set\n",
			want: []option{{"CONFIG_A", "y", 1}, {"CONFIG_B", "n", 2}}},
		{name: "string and number values", in: "# header\n\nCONFIG_S=\"-x\"\nCONFIG_N=8\n",
			want: []option{{"CONFIG_S", `"-x"`, 3}, {"CONFIG_N", "8", 4}}},
		{name: "missing value", in: "CONFIG_A=\n", wantErr: true},
		{name: "misspelled unset", in: "# CONFIG_A is unset\n", wantErr: true},
		{name: "leading space", in: " CONFIG_A=y\n", wantErr: true},
		{name: "lower-case name", in: "config_a=y\n", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseFragment(strings.NewReader(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseFragment(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("parseFragment(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

// loadFragments parses every *.config in this directory (what build-kernel.sh merges).
func loadFragments(t *testing.T) map[string]option {
	t.Helper()
	files, err := filepath.Glob("*.config")
	if err != nil || len(files) == 0 {
		t.Fatalf("no *.config fragments found (err %v)", err)
	}
	all := map[string]option{}
	where := map[string]string{}
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		opts, err := parseFragment(fh)
		fh.Close()
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, o := range opts {
			if prev, dup := where[o.Name]; dup {
				t.Errorf("%s:%d: %s already set in %s; set each option once", f, o.Line, o.Name, prev)
			}
			where[o.Name] = fmt.Sprintf("%s:%d", f, o.Line)
			all[o.Name] = o
		}
	}
	return all
}

// TestFragmentsKeepContract pins the options the rest of vmctl depends on, so
// that removing one from a fragment is a visible test failure, not a guest that
// misbehaves later. The boot test checks the behaviour; this names the cause.
func TestFragmentsKeepContract(t *testing.T) {
	opts := loadFragments(t)
	required := map[string]string{
		"CONFIG_MODULES":                     "n", // everything built in; no module loader in the guest
		"CONFIG_64BIT":                       "y",
		"CONFIG_SMP":                         "y",
		"CONFIG_NR_CPUS":                     "8",
		"CONFIG_X86_MPPARSE":                 "y", // CPUs and IRQ routing come from the MP table
		"CONFIG_KVM_GUEST":                   "y", // kvm-clock
		"CONFIG_PVH":                         "y", // direct boot of the ELF vmlinux
		"CONFIG_SERIAL_8250_CONSOLE":         "y",
		"CONFIG_VIRTIO_CONSOLE":              "y", // agent channel on QEMU hosts without vsock
		"CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES": "y",
		"CONFIG_VIRTIO_BLK":                  "y",
		"CONFIG_VIRTIO_NET":                  "y", // a VM's NICs (docs/networking.md)
		"CONFIG_INET":                        "y",
		"CONFIG_IPV6":                        "y", // ::1 on lo; servers that listen on [::]
		"CONFIG_PACKET":                      "y", // tcpdump, arping, DHCP clients in containers
		"CONFIG_VIRTIO_VSOCKETS":             "y",
		"CONFIG_HW_RANDOM_VIRTIO":            "y",
		"CONFIG_BLK_DEV_INITRD":              "y",
		"CONFIG_RD_GZIP":                     "y",
		"CONFIG_DEVTMPFS":                    "y",
		"CONFIG_EXT4_FS":                     "y",
		"CONFIG_OVERLAY_FS":                  "y",
		"CONFIG_VIRTIO_FS":                   "y", // bind mounts under QEMU (virtiofsd)
		"CONFIG_NET_9P_VIRTIO":               "y", // bind mounts under vmctl-vmm (its virtio-9p device)
		"CONFIG_9P_FS":                       "y",
		"CONFIG_UNIX98_PTYS":                 "y",
		"CONFIG_FUTEX":                       "y", // Go runtime
		"CONFIG_EPOLL":                       "y", // Go runtime
		"CONFIG_PID_NS":                      "y",
		"CONFIG_NET_NS":                      "y",
		"CONFIG_USER_NS":                     "y",
		"CONFIG_MEMCG":                       "y",
		"CONFIG_CGROUP_PIDS":                 "y",
		"CONFIG_BLK_CGROUP":                  "y", // io.stat: a container's block I/O (docker stats)
		"CONFIG_CFS_BANDWIDTH":               "y",
		"CONFIG_CPUSETS":                     "y",
		"CONFIG_ACPI":                        "n", // microvm,acpi=off: devices come from the command line
	}
	for name, want := range required {
		got, ok := opts[name]
		switch {
		case !ok:
			t.Errorf("%s is not in any fragment, want %s", name, want)
		case got.Value != want:
			t.Errorf("%s = %s, want %s", name, got.Value, want)
		}
	}
	// The release string must differ from a host kernel's (build-kernel.sh also checks uname -r).
	if lv := opts["CONFIG_LOCALVERSION"].Value; lv == "" || lv == `""` {
		t.Errorf("CONFIG_LOCALVERSION is empty; the guest release must not look like a host kernel")
	}
}
