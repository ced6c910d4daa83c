package seccomp

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/vmctl/vmctl/guest-agent/internal/testenv"

	profiles "github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/vmctl/vmctl/api/agent/contract"
)

// dockerProfile is Docker's default profile for a container with caps, as
// dockerd computes it.
func dockerProfile(t testing.TB, caps ...string) *specs.LinuxSeccomp {
	t.Helper()
	p, err := profiles.GetDefaultProfile(&specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{Bounding: caps}}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mustCompile(t testing.TB, s *specs.LinuxSeccomp) *Filter {
	t.Helper()
	f, err := Compile(s)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return f
}

// call is one system call as the filter sees it.
type call struct {
	arch uint32
	nr   uint32
	args [6]uint64
}

func sys(name string, args ...uint64) call {
	nr, ok := native.SyscallNames[name]
	if !ok {
		panic("no system call " + name)
	}
	c := call{arch: unix.AUDIT_ARCH_X86_64, nr: uint32(nr)}
	copy(c.args[:], args)
	return c
}

// run evaluates f on c in a BPF interpreter. The filter loads 32-bit
// words of struct seccomp_data in native (little-endian) order, and the
// interpreter loads them big-endian: each word is stored big-endian at its
// offset, so both read the same values.
func run(t testing.TB, f *Filter, c call) uint32 {
	t.Helper()
	raw := make([]bpf.RawInstruction, len(f.Program))
	for i, in := range f.Program {
		raw[i] = bpf.RawInstruction{Op: in.Code, Jt: in.Jt, Jf: in.Jf, K: in.K}
	}
	insts, ok := bpf.Disassemble(raw)
	if !ok {
		t.Fatal("the filter does not disassemble")
	}
	vm, err := bpf.NewVM(insts)
	if err != nil {
		t.Fatalf("the filter does not load: %v", err)
	}
	var data [64]byte
	binary.BigEndian.PutUint32(data[offNr:], c.nr)
	binary.BigEndian.PutUint32(data[offArch:], c.arch)
	for i, a := range c.args {
		binary.BigEndian.PutUint32(data[16+8*i:], uint32(a))
		binary.BigEndian.PutUint32(data[20+8*i:], uint32(a>>32))
	}
	v, err := vm.Run(data[:])
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	return uint32(v)
}

const (
	allow  = unix.SECCOMP_RET_ALLOW
	eperm  = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
	enosys = unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)
)

func errnoRet(e unix.Errno) uint32 { return unix.SECCOMP_RET_ERRNO | uint32(e) }

func name(v uint32) string {
	switch {
	case v == allow:
		return "ALLOW"
	case v&unix.SECCOMP_RET_ACTION_FULL == unix.SECCOMP_RET_ERRNO:
		return "ERRNO(" + unix.ErrnoName(unix.Errno(v&unix.SECCOMP_RET_DATA)) + fmt.Sprintf("=%d)", v&unix.SECCOMP_RET_DATA)
	}
	return fmt.Sprintf("%#x", v)
}

const (
	cloneNewNS   = unix.CLONE_NEWNS
	cloneNewUser = unix.CLONE_NEWUSER
	// cloneThread is what a C library's pthread_create and the Go runtime
	// pass to clone.
	cloneThread = unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND | unix.CLONE_THREAD | unix.CLONE_SYSVSEM
)

// TestDockerDefaultProfile checks the compiled default profile against
// what Docker answers: the common calls pass, namespace and kernel-wide
// calls fail with EPERM, clone3 with ENOSYS (so that a C library falls back
// to clone, whose flags the filter can see), clone only without namespace
// flags; other ABIs and unknown numbers get ENOSYS.
func TestDockerDefaultProfile(t *testing.T) {
	f := mustCompile(t, dockerProfile(t, testenv.DockerCapabilities...))
	tests := []struct {
		name string
		c    call
		want uint32
	}{
		{"read", sys("read", 0, 0, 10), allow},
		{"execve", sys("execve"), allow},
		{"futex", sys("futex"), allow},
		{"openat", sys("openat"), allow},
		{"clone for a thread", sys("clone", cloneThread), allow},
		{"clone for fork", sys("clone", uint64(unix.SIGCHLD)), allow},
		{"clone with a bit above 32", sys("clone", 1<<40|uint64(unix.SIGCHLD)), allow},
		{"clone into a mount namespace", sys("clone", cloneNewNS|uint64(unix.SIGCHLD)), eperm},
		{"clone into a user namespace", sys("clone", cloneNewUser|cloneThread), eperm},
		{"clone3", sys("clone3", 0, 88), enosys},
		{"unshare", sys("unshare", 0), eperm},
		{"setns", sys("setns"), eperm},
		{"mount", sys("mount"), eperm},
		{"umount2", sys("umount2"), eperm},
		{"keyctl", sys("keyctl"), eperm},
		{"add_key", sys("add_key"), eperm},
		{"syslog", sys("syslog"), eperm},
		{"init_module", sys("init_module"), eperm},
		{"kexec_load", sys("kexec_load"), eperm},
		{"bpf", sys("bpf"), eperm},
		{"settimeofday", sys("settimeofday"), eperm},
		{"socket AF_INET", sys("socket", unix.AF_INET), allow},
		{"socket AF_UNIX", sys("socket", unix.AF_UNIX), allow},
		{"socket AF_NETLINK", sys("socket", unix.AF_NETLINK), allow},
		{"socket AF_VSOCK", sys("socket", unix.AF_VSOCK), eperm},
		{"personality query", sys("personality", 0xffffffff), allow},
		{"personality PER_LINUX", sys("personality", 0), allow},
		{"personality with a high word", sys("personality", 1<<32), eperm},
		{"personality READ_IMPLIES_EXEC", sys("personality", 0x0400000), eperm},
		{"i386 ABI", call{arch: unix.AUDIT_ARCH_I386, nr: 3}, enosys},
		{"x32 ABI", call{arch: unix.AUDIT_ARCH_X86_64, nr: x32SyscallBit | 0}, enosys},
		{"number past the table", call{arch: unix.AUDIT_ARCH_X86_64, nr: uint32(lastSyscall) + 1}, enosys},
		{"huge number", call{arch: unix.AUDIT_ARCH_X86_64, nr: 0x3fffffff}, enosys},
	}
	for _, tt := range tests {
		if got := run(t, f, tt.c); got != tt.want {
			t.Errorf("%s: filter answers %s, want %s", tt.name, name(got), name(tt.want))
		}
	}
}

// With CAP_SYS_ADMIN Docker's profile lets the namespace calls through
// (the capability is then the check), clone3 included.
func TestDockerProfileWithSysAdmin(t *testing.T) {
	f := mustCompile(t, dockerProfile(t, append(slices.Clone(testenv.DockerCapabilities), "CAP_SYS_ADMIN")...))
	for _, c := range []call{sys("clone3", 0, 88), sys("unshare", cloneNewNS), sys("mount"), sys("setns"),
		sys("clone", cloneNewNS|uint64(unix.SIGCHLD))} {
		if got := run(t, f, c); got != allow {
			t.Errorf("system call %d with CAP_SYS_ADMIN: filter answers %s, want ALLOW", c.nr, name(got))
		}
	}
	if got := run(t, f, sys("keyctl")); got != eperm {
		t.Errorf("keyctl with CAP_SYS_ADMIN: %s, want EPERM", name(got))
	}
}

func errnoPtr(e unix.Errno) *uint { v := uint(e); return &v }

// TestCustomProfiles checks the parts of a profile Docker's does not use.
func TestCustomProfiles(t *testing.T) {
	type check struct {
		c    call
		want uint32
	}
	masked := func(mask, want uint64) []specs.LinuxSeccompArg {
		return []specs.LinuxSeccompArg{{Index: 1, Value: mask, ValueTwo: want, Op: specs.OpMaskedEqual}}
	}
	cmp := func(op specs.LinuxSeccompOperator, v uint64) []specs.LinuxSeccompArg {
		return []specs.LinuxSeccompArg{{Index: 2, Value: v, Op: op}}
	}
	const big = 1<<32 | 5
	tests := []struct {
		name    string
		profile specs.LinuxSeccomp
		checks  []check
	}{
		{"deny mkdir with its own errno over an allowing default",
			specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{
				{Names: []string{"mkdir", "no_such_call"}, Action: specs.ActErrno, ErrnoRet: errnoPtr(unix.EACCES)}}},
			[]check{{sys("mkdir"), errnoRet(unix.EACCES)}, {sys("mkdirat"), allow}, {sys("read"), allow},
				// An allowing default has nothing to hide from newer calls.
				{call{arch: unix.AUDIT_ARCH_X86_64, nr: uint32(lastSyscall) + 1}, allow},
				{call{arch: unix.AUDIT_ARCH_I386, nr: 39}, enosys}}},
		{"errno 0 fakes success, the default's errno is its own",
			specs.LinuxSeccomp{DefaultAction: specs.ActErrno, DefaultErrnoRet: errnoPtr(unix.ENOSYS), Syscalls: []specs.LinuxSyscall{
				{Names: []string{"read"}, Action: specs.ActAllow},
				{Names: []string{"chmod"}, Action: specs.ActErrno, ErrnoRet: errnoPtr(0)},
				{Names: []string{"chown"}, Action: specs.ActErrno}}},
			[]check{{sys("read"), allow}, {sys("chmod"), unix.SECCOMP_RET_ERRNO}, {sys("chown"), eperm}, {sys("write"), enosys}}},
		{"other actions",
			specs.LinuxSeccomp{DefaultAction: specs.ActKillProcess, Syscalls: []specs.LinuxSyscall{
				{Names: []string{"read"}, Action: specs.ActLog},
				{Names: []string{"write"}, Action: specs.ActTrap},
				{Names: []string{"close"}, Action: specs.ActTrace},
				{Names: []string{"open"}, Action: specs.ActTrace, ErrnoRet: errnoPtr(unix.ENOENT)},
				{Names: []string{"stat"}, Action: specs.ActKill},
				{Names: []string{"fstat"}, Action: specs.ActKillThread},
				{Names: []string{"lstat"}, Action: specs.ActKillProcess}}},
			[]check{{sys("read"), unix.SECCOMP_RET_LOG}, {sys("write"), unix.SECCOMP_RET_TRAP},
				{sys("close"), unix.SECCOMP_RET_TRACE | uint32(unix.EPERM)}, {sys("open"), unix.SECCOMP_RET_TRACE | uint32(unix.ENOENT)},
				{sys("stat"), unix.SECCOMP_RET_KILL_THREAD}, {sys("fstat"), unix.SECCOMP_RET_KILL_THREAD},
				{sys("lstat"), unix.SECCOMP_RET_KILL_PROCESS}, {sys("poll"), unix.SECCOMP_RET_KILL_PROCESS}}},
		{"masked equal: cleared and set bits, bits outside the mask ignored",
			specs.LinuxSeccomp{DefaultAction: specs.ActErrno, Syscalls: []specs.LinuxSyscall{
				{Names: []string{"fcntl"}, Action: specs.ActAllow, Args: masked(0xf0|1<<33, 0x30|1<<33)}}},
			[]check{{sys("fcntl", 0, 0x30|1<<33), allow}, {sys("fcntl", 0, 0x3f|1<<33|1<<40), allow},
				{sys("fcntl", 0, 0x30), eperm}, {sys("fcntl", 0, 0x70|1<<33), eperm}, {sys("fcntl", 0, 0x20|1<<33), eperm}}},
		{"masked equal with a value outside its mask matches nothing",
			specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{
				{Names: []string{"fcntl"}, Action: specs.ActErrno, Args: masked(0xf, 0x10)}}},
			[]check{{sys("fcntl", 0, 0x10), allow}, {sys("fcntl", 0, 0x1f), allow}}},
		{"masked equal with an empty mask matches everything",
			specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{
				{Names: []string{"fcntl"}, Action: specs.ActErrno, Args: masked(0, 0)}}},
			[]check{{sys("fcntl", 0, 0x10), eperm}, {sys("fcntl"), eperm}}},
		{"64-bit comparisons",
			specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{
				{Names: []string{"lseek"}, Action: specs.ActErrno, ErrnoRet: errnoPtr(1), Args: cmp(specs.OpLessThan, big)},
				{Names: []string{"pread64"}, Action: specs.ActErrno, ErrnoRet: errnoPtr(2), Args: cmp(specs.OpLessEqual, big)},
				{Names: []string{"pwrite64"}, Action: specs.ActErrno, ErrnoRet: errnoPtr(3), Args: cmp(specs.OpGreaterThan, big)},
				{Names: []string{"readv"}, Action: specs.ActErrno, ErrnoRet: errnoPtr(4), Args: cmp(specs.OpGreaterEqual, big)},
				{Names: []string{"writev"}, Action: specs.ActErrno, ErrnoRet: errnoPtr(5), Args: cmp(specs.OpNotEqual, big)},
				{Names: []string{"access"}, Action: specs.ActErrno, ErrnoRet: errnoPtr(6), Args: cmp(specs.OpEqualTo, big)}}},
			[]check{
				{sys("lseek", 0, 0, big-1), errnoRet(1)}, {sys("lseek", 0, 0, 0xffffffff), errnoRet(1)}, {sys("lseek", 0, 0, big), allow}, {sys("lseek", 0, 0, 1<<32|0xffffffff), allow},
				{sys("pread64", 0, 0, big), errnoRet(2)}, {sys("pread64", 0, 0, big+1), allow}, {sys("pread64", 0, 0, 5), errnoRet(2)},
				{sys("pwrite64", 0, 0, big+1), errnoRet(3)}, {sys("pwrite64", 0, 0, 2<<32), errnoRet(3)}, {sys("pwrite64", 0, 0, big), allow}, {sys("pwrite64", 0, 0, 6), allow},
				{sys("readv", 0, 0, big), errnoRet(4)}, {sys("readv", 0, 0, big-1), allow},
				{sys("writev", 0, 0, big), allow}, {sys("writev", 0, 0, 5), errnoRet(5)}, {sys("writev", 0, 0, 1<<32), errnoRet(5)},
				{sys("access", 0, 0, big), errnoRet(6)}, {sys("access", 0, 0, 5), allow}}},
		{"a call's conditional rule goes before its unconditional one",
			specs.LinuxSeccomp{DefaultAction: specs.ActErrno, Syscalls: []specs.LinuxSyscall{
				{Names: []string{"clone"}, Action: specs.ActAllow},
				{Names: []string{"clone"}, Action: specs.ActErrno, ErrnoRet: errnoPtr(unix.EACCES),
					Args: []specs.LinuxSeccompArg{{Index: 0, Value: cloneNewUser, ValueTwo: cloneNewUser, Op: specs.OpMaskedEqual}}},
				// The first unconditional rule wins.
				{Names: []string{"clone"}, Action: specs.ActKillProcess}}},
			[]check{{sys("clone", uint64(unix.SIGCHLD)), allow}, {sys("clone", cloneNewUser), errnoRet(unix.EACCES)}}},
		{"conditions on one argument are alternatives, on several all hold",
			specs.LinuxSeccomp{DefaultAction: specs.ActErrno, Syscalls: []specs.LinuxSyscall{
				{Names: []string{"socket"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{
					{Index: 0, Value: unix.AF_INET, Op: specs.OpEqualTo}, {Index: 0, Value: unix.AF_INET6, Op: specs.OpEqualTo}}},
				{Names: []string{"kill"}, Action: specs.ActAllow, Args: []specs.LinuxSeccompArg{
					{Index: 0, Value: 1, Op: specs.OpEqualTo}, {Index: 1, Value: 9, Op: specs.OpEqualTo}}}}},
			[]check{{sys("socket", unix.AF_INET), allow}, {sys("socket", unix.AF_INET6), allow}, {sys("socket", unix.AF_UNIX), eperm},
				{sys("kill", 1, 9), allow}, {sys("kill", 1, 15), eperm}, {sys("kill", 2, 9), eperm}}},
		{"a rule with the default action is dropped",
			specs.LinuxSeccomp{DefaultAction: specs.ActErrno, Syscalls: []specs.LinuxSyscall{
				{Names: []string{"clone"}, Action: specs.ActErrno, Args: []specs.LinuxSeccompArg{{Index: 0, Value: cloneNewNS, ValueTwo: cloneNewNS, Op: specs.OpMaskedEqual}}},
				{Names: []string{"clone"}, Action: specs.ActAllow}}},
			[]check{{sys("clone", cloneNewNS), allow}}},
		{"no rules",
			specs.LinuxSeccomp{DefaultAction: specs.ActErrno, DefaultErrnoRet: errnoPtr(unix.EACCES)},
			[]check{{sys("read"), errnoRet(unix.EACCES)}}},
	}
	for _, tt := range tests {
		f := mustCompile(t, &tt.profile)
		for _, c := range tt.checks {
			if got := run(t, f, c.c); got != c.want {
				t.Errorf("%s: call %d%v: filter answers %s, want %s", tt.name, c.c.nr, c.c.args, name(got), name(c.want))
			}
		}
	}
}

func TestCompileRefuses(t *testing.T) {
	seven := uint(7)
	tests := []struct {
		name    string
		profile specs.LinuxSeccomp
	}{
		{"no default action", specs.LinuxSeccomp{}},
		{"notify", specs.LinuxSeccomp{DefaultAction: specs.ActNotify}},
		{"a rule's notify", specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{{Names: []string{"read"}, Action: specs.ActNotify}}}},
		{"unknown action", specs.LinuxSeccomp{DefaultAction: "SCMP_ACT_MAYBE"}},
		{"listener", specs.LinuxSeccomp{DefaultAction: specs.ActAllow, ListenerPath: "/run/seccomp.sock"}},
		{"unknown flag", specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Flags: []specs.LinuxSeccompFlag{"SECCOMP_FILTER_FLAG_NEW_LISTENER"}}},
		{"errno past MAX_ERRNO", specs.LinuxSeccomp{DefaultAction: specs.ActErrno, DefaultErrnoRet: errnoPtr(4096)}},
		{"seventh argument", specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{
			{Names: []string{"read"}, Action: specs.ActErrno, Args: []specs.LinuxSeccompArg{{Index: seven - 1, Op: specs.OpEqualTo}}}}}},
		{"unknown operator", specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{
			{Names: []string{"read"}, Action: specs.ActErrno, Args: []specs.LinuxSeccompArg{{Index: 0, Op: "SCMP_CMP_ODD"}}}}}},
	}
	for _, tt := range tests {
		if f, err := Compile(&tt.profile); !errors.Is(err, ErrProfile) {
			t.Errorf("%s: Compile = %v, %v; want ErrProfile", tt.name, f, err)
		}
	}
	if f, err := Compile(nil); f != nil || err != nil {
		t.Errorf("Compile(nil) = %v, %v; want no filter", f, err)
	}
}

// The agent compiles everything the contract promises the engine, and
// nothing more.
func TestContractNamesCompile(t *testing.T) {
	for _, a := range append(slices.Clone(contract.SeccompActions), "SCMP_ACT_NOTIFY") {
		_, err := Compile(&specs.LinuxSeccomp{DefaultAction: specs.LinuxSeccompAction(a)})
		if (err == nil) != slices.Contains(contract.SeccompActions, a) {
			t.Errorf("action %s: Compile = %v", a, err)
		}
	}
	for _, op := range contract.SeccompOperators {
		p := &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Syscalls: []specs.LinuxSyscall{
			{Names: []string{"read"}, Action: specs.ActErrno, Args: []specs.LinuxSeccompArg{{Index: contract.SeccompMaxArg, Value: 1, Op: specs.LinuxSeccompOperator(op)}}}}}
		if _, err := Compile(p); err != nil {
			t.Errorf("operator %s: %v", op, err)
		}
	}
	for _, fl := range append(slices.Clone(contract.SeccompFlags), "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV") {
		_, err := Compile(&specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Flags: []specs.LinuxSeccompFlag{specs.LinuxSeccompFlag(fl)}})
		if (err == nil) != slices.Contains(contract.SeccompFlags, fl) {
			t.Errorf("flag %s: Compile = %v", fl, err)
		}
	}
	max := uint(contract.SeccompMaxErrno)
	if _, err := Compile(&specs.LinuxSeccomp{DefaultAction: specs.ActErrno, DefaultErrnoRet: &max}); err != nil {
		t.Errorf("errno %d: %v", max, err)
	}
}

// reference is what a profile answers, from its rules directly, with the
// meaning the package doc gives them.
func reference(p *specs.LinuxSeccomp, c call) uint32 {
	if c.arch != unix.AUDIT_ARCH_X86_64 || c.nr&x32SyscallBit != 0 {
		return enosys
	}
	def, _ := actionValue(p.DefaultAction, p.DefaultErrnoRet)
	if int(c.nr) > lastSyscall && def != allow && def != unix.SECCOMP_RET_LOG {
		return enosys
	}
	holds := func(a specs.LinuxSeccompArg) bool {
		v := c.args[a.Index]
		switch a.Op {
		case specs.OpNotEqual:
			return v != a.Value
		case specs.OpLessThan:
			return v < a.Value
		case specs.OpLessEqual:
			return v <= a.Value
		case specs.OpEqualTo:
			return v == a.Value
		case specs.OpGreaterEqual:
			return v >= a.Value
		case specs.OpGreaterThan:
			return v > a.Value
		case specs.OpMaskedEqual:
			return v&a.Value == a.ValueTwo
		}
		panic("operator " + a.Op)
	}
	matches := func(args []specs.LinuxSeccompArg) bool {
		seen, sameIndex := map[uint]bool{}, false
		for _, a := range args {
			sameIndex = sameIndex || seen[a.Index]
			seen[a.Index] = true
		}
		for _, a := range args {
			if sameIndex && holds(a) {
				return true
			}
			if !sameIndex && !holds(a) {
				return false
			}
		}
		return !sameIndex || len(args) == 0
	}
	name := native.SyscallNumbers[int(c.nr)]
	for _, conditional := range []bool{true, false} {
		for _, r := range p.Syscalls {
			act, _ := actionValue(r.Action, r.ErrnoRet)
			if act == def || !slices.Contains(r.Names, name) || (len(r.Args) > 0) != conditional {
				continue
			}
			if matches(r.Args) {
				return act
			}
		}
	}
	return def
}

// TestAgainstReference compiles random profiles and compares what the
// filter answers to random calls with what the rules say.
func TestAgainstReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	names := []string{"read", "write", "clone", "socket", "mkdir", "kill", "ioctl", "fcntl"}
	ops := []specs.LinuxSeccompOperator{specs.OpNotEqual, specs.OpLessThan, specs.OpLessEqual, specs.OpEqualTo,
		specs.OpGreaterEqual, specs.OpGreaterThan, specs.OpMaskedEqual}
	actions := []specs.LinuxSeccompAction{specs.ActAllow, specs.ActErrno, specs.ActTrap, specs.ActLog, specs.ActKillProcess}
	// Values near the ones compared, so that both outcomes happen.
	values := []uint64{0, 1, 2, 0x10, 0x30, 0xff, 1 << 31, 0xffffffff, 1 << 32, 1<<32 | 0x10, ^uint64(0)}
	pick := func(vs []uint64) uint64 { return vs[rng.IntN(len(vs))] }
	for n := 0; n < 300; n++ {
		p := &specs.LinuxSeccomp{DefaultAction: actions[rng.IntN(len(actions))]}
		if rng.IntN(2) == 0 {
			p.DefaultErrnoRet = errnoPtr(unix.Errno(rng.IntN(40)))
		}
		for r := rng.IntN(6); r > 0; r-- {
			rule := specs.LinuxSyscall{Names: []string{names[rng.IntN(len(names))]}, Action: actions[rng.IntN(len(actions))]}
			if rng.IntN(3) == 0 {
				rule.Names = append(rule.Names, names[rng.IntN(len(names))])
			}
			if rng.IntN(2) == 0 {
				rule.ErrnoRet = errnoPtr(unix.Errno(rng.IntN(40)))
			}
			for a := rng.IntN(3); a > 0; a-- {
				rule.Args = append(rule.Args, specs.LinuxSeccompArg{Index: uint(rng.IntN(3)), Op: ops[rng.IntN(len(ops))],
					Value: pick(values), ValueTwo: pick(values) & pick(values)})
			}
			p.Syscalls = append(p.Syscalls, rule)
		}
		f, err := Compile(p)
		if err != nil {
			t.Fatalf("profile %d: %v", n, err)
		}
		for k := 0; k < 200; k++ {
			c := sys(names[rng.IntN(len(names))], pick(values), pick(values), pick(values))
			if got, want := run(t, f, c), reference(p, c); got != want {
				js, _ := json.Marshal(p)
				t.Fatalf("profile %s: call %d%v: filter answers %s, rules say %s", js, c.nr, c.args, name(got), name(want))
			}
		}
	}
}

// A profile from the network never panics the agent, and what compiles
// loads.
func FuzzCompile(f *testing.F) {
	docker, err := json.Marshal(dockerProfile(f, testenv.DockerCapabilities...))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(docker)
	f.Add([]byte(`{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}`))
	f.Add([]byte(`{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["clone"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":2114060288,"valueTwo":0,"op":"SCMP_CMP_MASKED_EQ"},{"index":0,"value":1,"op":"SCMP_CMP_GT"}]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var p specs.LinuxSeccomp
		if json.Unmarshal(data, &p) != nil {
			return
		}
		filter, err := Compile(&p)
		if err != nil || filter == nil {
			return
		}
		if len(filter.Program) > maxInstructions {
			t.Fatalf("%d instructions", len(filter.Program))
		}
		for _, c := range []call{sys("read"), sys("clone", 1<<40|cloneNewNS), {arch: unix.AUDIT_ARCH_I386}} {
			run(t, filter, c)
		}
	})
}
