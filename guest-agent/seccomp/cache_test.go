package seccomp

import (
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestCache(t *testing.T) {
	var c Cache
	p := &specs.LinuxSeccomp{DefaultAction: specs.ActErrno, Syscalls: []specs.LinuxSyscall{{Names: []string{"read"}, Action: specs.ActAllow}}}
	a, err := c.Compile(p)
	if err != nil || a == nil {
		t.Fatalf("Compile = %v, %v", a, err)
	}
	same := *p
	same.Syscalls = []specs.LinuxSyscall{{Names: []string{"read"}, Action: specs.ActAllow}}
	if b, err := c.Compile(&same); err != nil || b != a {
		t.Fatalf("an equal profile compiled again (%p, %p, %v)", a, b, err)
	}
	other := *p
	other.Syscalls = []specs.LinuxSyscall{{Names: []string{"write"}, Action: specs.ActAllow}}
	b, err := c.Compile(&other)
	if err != nil || b == a {
		t.Fatalf("another profile got the first one's filter (%v)", err)
	}
	want, _ := Compile(&other)
	if len(b.Program) != len(want.Program) {
		t.Fatalf("cached filter has %d instructions, a fresh compile %d", len(b.Program), len(want.Program))
	}
	bad := &specs.LinuxSeccomp{DefaultAction: "SCMP_ACT_NOPE"}
	for range 2 {
		if _, err := c.Compile(bad); err == nil {
			t.Fatal("a bad profile compiled (or its error was forgotten)")
		}
	}
	if f, err := c.Compile(nil); f != nil || err != nil {
		t.Fatalf("Compile(nil) = %v, %v; want no filter", f, err)
	}
	for i := range cacheSize + 2 {
		q := *p
		q.Syscalls = []specs.LinuxSyscall{{Names: []string{"read"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{{Index: 0, Value: uint64(i), Op: specs.OpEqualTo}}}}
		if _, err := c.Compile(&q); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(c.m); n > cacheSize {
		t.Fatalf("cache holds %d filters, at most %d", n, cacheSize)
	}
}
