package metrics

import (
	"os"
	"testing"
	"unicode/utf8"

	"github.com/vmctl/vmctl/api/agent/contract"
)

// FuzzProcFiles feeds arbitrary bytes to the parsers of what a container
// can shape: its processes' names and command lines (in /proc/PID/stat
// and cmdline) and, through its own cgroups and namespaces, the flat keyed
// files. Nothing panics, and what they keep stays UTF-8 within the
// contract's bounds.
func FuzzProcFiles(f *testing.F) {
	for _, name := range []string{"testdata/proc/100/stat", "testdata/proc/101/stat", "testdata/proc/100/status",
		"testdata/proc/100/cmdline", "testdata/cgroup/c1/memory.stat", "testdata/proc/100/net/dev"} {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("1 ((()) Z 0 0 0 -1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if p, err := parsePidStat(b); err == nil && (!utf8.ValidString(p.comm) || len(p.comm) > contract.MaxProcessNameLen) {
			t.Errorf("parsePidStat kept the command name %q", p.comm)
		}
		var p procInfo
		_ = parseStatus(b, &p)
		args := splitArgs(b)
		n := 0
		for _, a := range args {
			n += len(a)
			if !utf8.ValidString(a) {
				t.Errorf("splitArgs kept %q", a)
			}
		}
		if len(args) > contract.MaxProcessArgs || n > contract.MaxProcessArgsBytes {
			t.Errorf("splitArgs kept %d arguments of %d bytes", len(args), n)
		}
		if m := parseKeyed(b, contract.MaxMemoryStatKeys); len(m) > contract.MaxMemoryStatKeys {
			t.Errorf("parseKeyed kept %d keys", len(m))
		}
		for _, n := range parseNetDev(b) {
			if !utf8.ValidString(n.Name) || len(n.Name) > maxInterfaceName {
				t.Errorf("parseNetDev kept the interface %q", n.Name)
			}
		}
		parseIOStat(b)
		parseProcStat(b)
		parseMeminfo(b)
	})
}
