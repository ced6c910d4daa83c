// Package seccomp compiles an OCI seccomp profile (a spec's linux.seccomp,
// such as Docker's default profile) into a classic BPF filter for the
// x86_64 guest, in pure Go, and installs it on the calling thread.
//
// The rules' matching code is github.com/elastic/go-seccomp-bpf's; this
// package gives it libseccomp's meaning, as runc uses libseccomp:
//   - a rule whose action is the default action is dropped (libseccomp
//     refuses it), and so is a system call name the guest's table does not
//     know (runc skips it);
//   - for one system call, its rules with argument conditions are tried
//     before its unconditional rule, whatever their order in the profile;
//     conditions of one rule on different arguments must all hold, several
//     conditions on the same argument are alternatives (runc's rule);
//   - SCMP_CMP_MASKED_EQ (arg & value == valueTwo) becomes "these bits
//     clear" and "each of these bits set" tests, exactly;
//   - SCMP_ACT_ERRNO and SCMP_ACT_TRACE return their errnoRet, EPERM when
//     none is given, also as the default action (the library itself only
//     knows EPERM there);
//   - system calls of another ABI (i386, x32: the guest kernel has neither)
//     and numbers past the newest system call the table knows answer
//     ENOSYS, the latter as runc's filters do so that a C library falls
//     back to an older call.
//
// It does not read profiles from JSON or pick a profile (the engine does,
// with Docker's rules), and it does not decide when to install a filter
// (the container runtime does, last before execve).
package seccomp

import (
	"errors"
	"fmt"
	"runtime"
	"slices"

	bpfseccomp "github.com/elastic/go-seccomp-bpf"
	"github.com/elastic/go-seccomp-bpf/arch"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/vmctl/vmctl/api/agent/contract"
)

// ErrProfile marks a profile the package cannot compile: one the engine
// should have refused.
var ErrProfile = errors.New("unsupported seccomp profile")

// Filter is a compiled filter.
type Filter struct {
	// Program is the filter as the kernel takes it (struct sock_filter).
	Program []unix.SockFilter
	// Flags are the SECCOMP_FILTER_FLAG_* the profile asked for.
	Flags uint32
}

// maxInstructions is the kernel's BPF_MAXINSNS.
const maxInstructions = 4096

// The layout of struct seccomp_data (include/uapi/linux/seccomp.h): the
// filter loads these 32-bit words.
const (
	offNr   = 0
	offArch = 4
)

// x32SyscallBit marks x32 system calls on an x86_64 arch
// (__X32_SYSCALL_BIT).
const x32SyscallBit = 0x40000000

var (
	// native is the guest's system call table.
	native = arch.X86_64
	// lastSyscall is the highest number native knows.
	lastSyscall = func() int {
		last := 0
		for nr := range native.SyscallNumbers {
			last = max(last, nr)
		}
		return last
	}()
)

// Compile turns s into a filter for an x86_64 guest; a nil profile is no
// filter. An error wraps ErrProfile, unless the library assembled
// something this package does not expect of it.
func Compile(s *specs.LinuxSeccomp) (*Filter, error) {
	if s == nil {
		return nil, nil
	}
	if runtime.GOARCH != "amd64" {
		return nil, fmt.Errorf("%w: filters are compiled for x86_64 only, not %s", ErrProfile, runtime.GOARCH)
	}
	if s.ListenerPath != "" || s.ListenerMetadata != "" {
		return nil, fmt.Errorf("%w: listenerPath: nothing in a container's VM listens for seccomp notifications", ErrProfile)
	}
	def, err := actionValue(s.DefaultAction, s.DefaultErrnoRet)
	if err != nil {
		return nil, fmt.Errorf("defaultAction: %w", err)
	}
	f := &Filter{}
	for _, flag := range s.Flags {
		switch string(flag) {
		case "SECCOMP_FILTER_FLAG_TSYNC":
			// The filter goes on the thread that execs the container's
			// process (or, for an init that stays, on all its threads);
			// nothing else runs in that process after it.
		case "SECCOMP_FILTER_FLAG_LOG":
			f.Flags |= unix.SECCOMP_FILTER_FLAG_LOG
		case "SECCOMP_FILTER_FLAG_SPEC_ALLOW":
			f.Flags |= unix.SECCOMP_FILTER_FLAG_SPEC_ALLOW
		default:
			return nil, fmt.Errorf("%w: flag %q", ErrProfile, flag)
		}
	}
	rules, err := collectRules(s.Syscalls, def)
	if err != nil {
		return nil, err
	}
	body, err := assembleRules(rules, def)
	if err != nil {
		return nil, err
	}
	prog := prologue(def)
	prog = append(prog, body...)
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return nil, fmt.Errorf("%w: assemble: %v", ErrProfile, err)
	}
	if len(raw) > maxInstructions {
		return nil, fmt.Errorf("%w: the filter has %d instructions, the kernel takes %d", ErrProfile, len(raw), maxInstructions)
	}
	f.Program = make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		f.Program[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	return f, nil
}

// prologue sends what the rules cannot judge to ENOSYS and leaves the
// system call number in the accumulator for them.
func prologue(def uint32) []bpf.Instruction {
	enosys := bpf.RetConstant{Val: unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)}
	p := []bpf.Instruction{
		// Another ABI: its numbers are not these.
		bpf.LoadAbsolute{Off: offArch, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.AUDIT_ARCH_X86_64, SkipTrue: 1},
		enosys,
		// x32 shares the arch value and sets a bit in the number.
		bpf.LoadAbsolute{Off: offNr, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: x32SyscallBit, SkipFalse: 1},
		enosys,
	}
	if def != unix.SECCOMP_RET_ALLOW && def != unix.SECCOMP_RET_LOG {
		// Newer than the table: a call the profile cannot have meant.
		p = append(p, bpf.JumpIf{Cond: bpf.JumpGreaterThan, Val: uint32(lastSyscall), SkipFalse: 1}, enosys)
	}
	return p
}

// actionValue is the SECCOMP_RET_* value of a profile action, as runc
// gives it to libseccomp.
func actionValue(a specs.LinuxSeccompAction, errnoRet *uint) (uint32, error) {
	data := uint32(unix.EPERM)
	if errnoRet != nil {
		if *errnoRet > contract.SeccompMaxErrno {
			return 0, fmt.Errorf("%w: errnoRet %d is above %d", ErrProfile, *errnoRet, contract.SeccompMaxErrno)
		}
		data = uint32(*errnoRet)
	}
	switch string(a) {
	case "SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD":
		return unix.SECCOMP_RET_KILL_THREAD, nil
	case "SCMP_ACT_KILL_PROCESS":
		return unix.SECCOMP_RET_KILL_PROCESS, nil
	case "SCMP_ACT_TRAP":
		return unix.SECCOMP_RET_TRAP, nil
	case "SCMP_ACT_ERRNO":
		return unix.SECCOMP_RET_ERRNO | data, nil
	case "SCMP_ACT_TRACE":
		return unix.SECCOMP_RET_TRACE | data, nil
	case "SCMP_ACT_ALLOW":
		return unix.SECCOMP_RET_ALLOW, nil
	case "SCMP_ACT_LOG":
		return unix.SECCOMP_RET_LOG, nil
	case "":
		return 0, fmt.Errorf("%w: no action", ErrProfile)
	}
	return 0, fmt.Errorf("%w: action %q", ErrProfile, a)
}

// rule is one system call's rule of the profile: its action, and the sets
// of conditions of which one must hold (none: unconditional).
type rule struct {
	nr     int
	name   string
	action uint32
	sets   []bpfseccomp.ArgumentConditions
}

// collectRules reads the profile's rules for the native table, in the
// order they are to be tried: every conditional rule in profile order,
// then the first unconditional rule of each system call.
func collectRules(calls []specs.LinuxSyscall, def uint32) ([]rule, error) {
	var conditional, unconditional []rule
	decided := map[int]bool{}
	// Each condition takes at least two instructions: past this many, the
	// filter cannot fit, and assembling it would only take long.
	conditions := 0
	for i, c := range calls {
		act, err := actionValue(c.Action, c.ErrnoRet)
		if err != nil {
			return nil, fmt.Errorf("rule %d (%v): %w", i, c.Names, err)
		}
		sets, never, err := conditionSets(c.Args)
		if err != nil {
			return nil, fmt.Errorf("rule %d (%v): %w", i, c.Names, err)
		}
		if act == def || never {
			continue
		}
		for _, name := range c.Names {
			nr, ok := native.SyscallNames[name]
			if !ok {
				continue
			}
			r := rule{nr: nr, name: name, action: act, sets: sets}
			switch {
			case len(sets) > 0:
				conditional = append(conditional, r)
				for _, set := range sets {
					conditions += len(set)
				}
				if conditions > maxInstructions {
					return nil, fmt.Errorf("%w: more argument conditions than a filter's %d instructions hold", ErrProfile, maxInstructions)
				}
			case !decided[nr]:
				decided[nr] = true
				unconditional = append(unconditional, r)
			}
		}
	}
	return append(conditional, unconditional...), nil
}

// conditionSets turns a rule's args into alternatives of conditions that
// must all hold; no sets is an unconditional rule. never reports a rule
// that can match nothing (a masked comparison with bits outside its mask).
// A rule with args stays conditional even where they hold for every value,
// as in libseccomp.
func conditionSets(args []specs.LinuxSeccompArg) (sets []bpfseccomp.ArgumentConditions, never bool, err error) {
	if len(args) == 0 {
		return nil, false, nil
	}
	perIndex := map[uint]int{}
	for _, a := range args {
		if a.Index > contract.SeccompMaxArg {
			return nil, false, fmt.Errorf("%w: argument index %d (a system call has %d)", ErrProfile, a.Index, contract.SeccompMaxArg+1)
		}
		perIndex[a.Index]++
	}
	// runc's rule: conditions on the same argument are separate rules.
	separate := false
	for _, n := range perIndex {
		separate = separate || n > 1
	}
	var all bpfseccomp.ArgumentConditions
	for _, a := range args {
		conds, nothing, err := argConditions(a)
		if err != nil {
			return nil, false, err
		}
		if len(conds) == 0 && !nothing {
			// Holds for every value: no bit of an empty mask is set.
			conds = bpfseccomp.ArgumentConditions{{Argument: uint32(a.Index), Operation: bpfseccomp.BitsNotSet, Value: 0}}
		}
		switch {
		case separate && !nothing:
			sets = append(sets, conds)
		case separate:
			// This alternative never holds; the others may.
		case nothing:
			return nil, true, nil
		default:
			all = append(all, conds...)
		}
	}
	if separate {
		return sets, len(sets) == 0, nil
	}
	return []bpfseccomp.ArgumentConditions{all}, false, nil
}

// argConditions is one comparison as the library's conditions, which all
// must hold. never reports a comparison that holds for no value; no
// conditions, one that holds for all.
func argConditions(a specs.LinuxSeccompArg) (conds bpfseccomp.ArgumentConditions, never bool, err error) {
	arg := uint32(a.Index)
	one := func(op bpfseccomp.Operation, v uint64) bpfseccomp.ArgumentConditions {
		return bpfseccomp.ArgumentConditions{{Argument: arg, Operation: op, Value: v}}
	}
	switch string(a.Op) {
	case "SCMP_CMP_NE":
		return one(bpfseccomp.NotEqual, a.Value), false, nil
	case "SCMP_CMP_LT":
		return one(bpfseccomp.LessThan, a.Value), false, nil
	case "SCMP_CMP_LE":
		return one(bpfseccomp.LessOrEqual, a.Value), false, nil
	case "SCMP_CMP_EQ":
		return one(bpfseccomp.Equal, a.Value), false, nil
	case "SCMP_CMP_GE":
		return one(bpfseccomp.GreaterOrEqual, a.Value), false, nil
	case "SCMP_CMP_GT":
		return one(bpfseccomp.GreaterThan, a.Value), false, nil
	case "SCMP_CMP_MASKED_EQ":
		// arg & mask == want: the mask's bits that want clears must be
		// clear (BitsNotSet: no bit of the value set), and each bit
		// want sets must be set (BitsSet holds when any bit of its value
		// is set, so one condition per bit).
		mask, want := a.Value, a.ValueTwo
		if want&^mask != 0 {
			return nil, true, nil
		}
		if clear := mask &^ want; clear != 0 {
			conds = append(conds, bpfseccomp.Condition{Argument: arg, Operation: bpfseccomp.BitsNotSet, Value: clear})
		}
		for bit := uint64(1); bit != 0; bit <<= 1 {
			if want&bit != 0 {
				conds = append(conds, bpfseccomp.Condition{Argument: arg, Operation: bpfseccomp.BitsSet, Value: bit})
			}
		}
		return conds, false, nil
	}
	return nil, false, fmt.Errorf("%w: operator %q", ErrProfile, a.Op)
}

// The library's Ret refuses no value but rewrites SECCOMP_RET_ERRNO with
// errno 0 to EPERM, and a policy's default action must be one of its named
// actions. So rules return a ticket, SECCOMP_RET_ERRNO with an errno past
// MAX_ERRNO (which no rule returns), the default returns
// SECCOMP_RET_ALLOW, and every return is then rewritten to the real
// action.
const (
	firstTicket   = unix.SECCOMP_RET_ERRNO | 0xf000
	defaultTicket = bpfseccomp.ActionAllow
)

// tickets numbers the actions of a filter.
type tickets []uint32

func (t *tickets) of(act uint32) bpfseccomp.Action {
	i := slices.Index(*t, act)
	if i < 0 {
		i = len(*t)
		*t = append(*t, act)
	}
	return bpfseccomp.Action(firstTicket + uint32(i))
}

// assembleRules compiles the rules, tried in order, and the default action
// into instructions that expect the system call number in the
// accumulator.
//
// The library compares the accumulator with the next call's number right
// after a call's argument checks failed, when it holds an argument. So
// each call's conditional rules are assembled on their own, and their way
// out ("no rule matched") loads the number again for what follows.
func assembleRules(rules []rule, def uint32) ([]bpf.Instruction, error) {
	var t tickets
	var body []bpf.Instruction
	i := 0
	for i < len(rules) && len(rules[i].sets) > 0 {
		// One run of rules with one call and one action: the library
		// ORs a name's condition sets within a group.
		g := bpfseccomp.SyscallGroup{Action: t.of(rules[i].action)}
		j := i
		for ; j < len(rules) && len(rules[j].sets) > 0 && rules[j].nr == rules[i].nr && rules[j].action == rules[i].action; j++ {
			for _, set := range rules[j].sets {
				g.NamesWithCondtions = append(g.NamesWithCondtions, bpfseccomp.NameWithConditions{Name: rules[j].name, Conditions: set})
			}
		}
		i = j
		chunk, err := assemblePolicy([]bpfseccomp.SyscallGroup{g})
		if err != nil {
			return nil, err
		}
		last := len(chunk) - 1
		for k, in := range chunk {
			switch {
			case in != bpf.RetConstant{Val: uint32(defaultTicket)}:
			case k == last:
				chunk[k] = bpf.LoadAbsolute{Off: offNr, Size: 4}
			default:
				chunk[k] = bpf.Jump{Skip: uint32(last - k - 1)}
			}
		}
		body = append(body, chunk...)
	}
	// Unconditional rules, one per call: one group per action, names by
	// number (the frequent calls have low ones).
	uncond := slices.Clone(rules[i:])
	slices.SortStableFunc(uncond, func(a, b rule) int { return a.nr - b.nr })
	var groups []bpfseccomp.SyscallGroup
	byAction := map[uint32]int{}
	for _, r := range uncond {
		gi, ok := byAction[r.action]
		if !ok {
			gi = len(groups)
			byAction[r.action] = gi
			groups = append(groups, bpfseccomp.SyscallGroup{Action: t.of(r.action)})
		}
		groups[gi].Names = append(groups[gi].Names, r.name)
	}
	if len(groups) > 0 {
		chunk, err := assemblePolicy(groups)
		if err != nil {
			return nil, err
		}
		body = append(body, chunk...)
	} else {
		body = append(body, bpf.RetConstant{Val: uint32(defaultTicket)})
	}
	if len(t) > 0x1000 {
		return nil, fmt.Errorf("%w: %d different actions", ErrProfile, len(t))
	}
	for i, in := range body {
		ret, ok := in.(bpf.RetConstant)
		if !ok {
			continue
		}
		switch k := ret.Val - firstTicket; {
		case ret.Val == uint32(defaultTicket):
			body[i] = bpf.RetConstant{Val: def}
		case ret.Val >= firstTicket && int(k) < len(t):
			body[i] = bpf.RetConstant{Val: t[k]}
		default:
			return nil, fmt.Errorf("seccomp: the assembled filter returns %#x, which no rule asked for", ret.Val)
		}
	}
	return body, nil
}

// assemblePolicy assembles groups with the library, without its prologue;
// the result ends with the default ticket's return.
func assemblePolicy(groups []bpfseccomp.SyscallGroup) ([]bpf.Instruction, error) {
	policy := bpfseccomp.Policy{DefaultAction: defaultTicket, Syscalls: groups}
	insts, err := policy.Assemble()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrProfile, err)
	}
	body, err := libraryBody(insts)
	if err != nil {
		return nil, err
	}
	if body[len(body)-1] != (bpf.RetConstant{Val: uint32(defaultTicket)}) {
		return nil, errors.New("seccomp: the assembled policy does not end with its default action")
	}
	return body, nil
}

// libraryBody strips the library's own prologue (the arch check, the
// number load and its x32 check) from an assembled policy: the rules that
// follow expect the number in the accumulator, as prologue leaves it. An
// error means the library changed the shape this relies on.
func libraryBody(insts []bpf.Instruction) ([]bpf.Instruction, error) {
	for k := 2; k <= 3 && k+2 < len(insts); k++ {
		ld, ok1 := insts[k].(bpf.LoadAbsolute)
		x32, ok2 := insts[k+1].(bpf.JumpIf)
		_, ok3 := insts[k+2].(bpf.RetConstant)
		if ok1 && ok2 && ok3 && ld.Off == offNr && x32.Cond == bpf.JumpGreaterOrEqual && x32.Val == x32SyscallBit {
			if arch, ok := insts[0].(bpf.LoadAbsolute); ok && arch.Off == offArch {
				return slices.Clone(insts[k+3:]), nil
			}
		}
	}
	return nil, errors.New("seccomp: the assembled policy does not start with the arch and x32 checks this package replaces")
}
