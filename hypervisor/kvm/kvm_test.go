package kvm

import (
	"errors"
	"io/fs"
	"testing"

	"golang.org/x/sys/unix"
)

// openKVM opens /dev/kvm or skips naming what is missing.
func openKVM(t *testing.T) *System {
	t.Helper()
	s, err := Open("/dev/kvm")
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) {
		t.Skipf("needs a usable /dev/kvm: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// tinyVM maps one page-aligned 64 KiB RAM slot at GPA 0 holding code at
// 0x1000 and returns a vCPU in real mode about to execute it.
func tinyVM(t *testing.T, s *System, code []byte, irqchip bool) (*VM, *VCPU, []byte) {
	t.Helper()
	vm, err := s.CreateVM()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vm.Close() })
	mem, err := unix.Mmap(-1, 0, 0x10000, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(mem) })
	copy(mem[0x1000:], code)
	if err := vm.SetUserMemoryRegion(0, 0, mem); err != nil {
		t.Fatal(err)
	}
	if err := vm.SetTSSAddr(0xfffbd000); err != nil {
		t.Fatal(err)
	}
	if irqchip {
		if err := vm.CreateIRQChip(); err != nil {
			t.Fatal(err)
		}
	}
	v, err := vm.CreateVCPU(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	sr, err := v.Sregs()
	if err != nil {
		t.Fatal(err)
	}
	sr.CS.Base, sr.CS.Selector = 0, 0
	if err := v.SetSregs(sr); err != nil {
		t.Fatal(err)
	}
	if err := v.SetRegs(Regs{RIP: 0x1000, RFLAGS: 2}); err != nil {
		t.Fatal(err)
	}
	return vm, v, mem
}

func TestSystem(t *testing.T) {
	s := openKVM(t)
	missing, err := s.MissingCaps(RequiredCaps)
	if err != nil {
		t.Fatal(err)
	}
	if len(missing) > 0 {
		t.Errorf("missing capabilities %v", missing)
	}
	ids, err := s.SupportedCPUID()
	if err != nil {
		t.Fatal(err)
	}
	var leaf0 bool
	for _, e := range ids {
		leaf0 = leaf0 || (e.Function == 0 && e.EAX > 0)
	}
	if !leaf0 {
		t.Errorf("SupportedCPUID has no leaf 0 among %d entries", len(ids))
	}
	if _, err := s.MSRIndexList(); err != nil {
		t.Error(err)
	}
}

// mov al,0x42; out 0x10,al; hlt
var outHLT = []byte{0xb0, 0x42, 0xe6, 0x10, 0xf4}

func TestRunIOThenHLT(t *testing.T) {
	s := openKVM(t)
	_, v, _ := tinyVM(t, s, outHLT, false)
	e, err := v.Run()
	if err != nil {
		t.Fatal(err)
	}
	if e.Reason != ExitIO || !e.IO.Out || e.IO.Port != 0x10 || e.IO.Size != 1 || len(e.IO.Data) != 1 || e.IO.Data[0] != 0x42 {
		t.Fatalf("first exit = %v data %x, want out port 0x10 byte 0x42", e, e.IO.Data)
	}
	e, err = v.Run()
	if err != nil || e.Reason != ExitHLT {
		t.Fatalf("second exit = %v, %v; want KVM_EXIT_HLT", e, err)
	}
	r, err := v.Regs()
	if err != nil {
		t.Fatal(err)
	}
	if r.RIP != 0x1005 {
		t.Errorf("RIP after hlt = %#x, want 0x1005", r.RIP)
	}
}

func TestImmediateExit(t *testing.T) {
	s := openKVM(t)
	_, v, _ := tinyVM(t, s, outHLT, false)
	v.SetImmediateExit(true)
	if _, err := v.Run(); !errors.Is(err, ErrInterrupted) {
		t.Fatalf("Run with immediate_exit = %v, want ErrInterrupted", err)
	}
	v.SetImmediateExit(false)
	if e, err := v.Run(); err != nil || e.Reason != ExitIO {
		t.Fatalf("Run after clearing = %v, %v; want KVM_EXIT_IO", e, err)
	}
}

// A store to a port with a registered ioeventfd signals the eventfd instead
// of exiting; the next exit is the hlt.
func TestIOEventFDAndIRQFD(t *testing.T) {
	s := openKVM(t)
	vm, v, _ := tinyVM(t, s, outHLT, true)
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	ev := IOEventFD{FD: efd, Addr: 0x10, Len: 1, PIO: true, DataMatch: true, Data: 0x42}
	if err := vm.RegisterIOEventFD(ev); err != nil {
		t.Fatal(err)
	}
	// The guest runs until the hlt, which with an irqchip stays in the
	// kernel; kick it out with immediate_exit from another goroutine once
	// the eventfd fired.
	done := make(chan struct{})
	go func() {
		defer close(done)
		var buf [8]byte
		for {
			if n, _ := unix.Read(efd, buf[:]); n == 8 {
				v.SetImmediateExit(true)
				return
			}
			unix.Nanosleep(&unix.Timespec{Nsec: 1e6}, nil)
		}
	}()
	// irqfd registration and line changes must be accepted with an irqchip.
	irq, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(irq)
	if err := vm.RegisterIRQFD(irq, 5); err != nil {
		t.Fatal(err)
	}
	if err := vm.IRQLine(4, true); err != nil {
		t.Fatal(err)
	}
	e, err := runWithTimeout(t, v, done)
	if err != nil && !errors.Is(err, ErrInterrupted) {
		t.Fatal(err)
	}
	if e.Reason == ExitIO {
		t.Fatalf("the store to port 0x10 exited (%v) although an ioeventfd matches it", e)
	}
	if err := vm.UnregisterIOEventFD(ev); err != nil {
		t.Error(err)
	}
	if err := vm.UnregisterIRQFD(irq, 5); err != nil {
		t.Error(err)
	}
}

// runWithTimeout runs v once; the halted vCPU is woken by a signal from a
// helper goroutine after kick is closed.
func runWithTimeout(t *testing.T, v *VCPU, kick <-chan struct{}) (Exit, error) {
	t.Helper()
	tid := make(chan int, 1)
	type result struct {
		e   Exit
		err error
	}
	res := make(chan result, 1)
	go func() {
		lockThread()
		tid <- unix.Gettid()
		e, err := v.Run()
		res <- result{e, err}
	}()
	id := <-tid
	<-kick
	for {
		select {
		case r := <-res:
			return r.e, r.err
		default:
			unix.Tgkill(unix.Getpid(), id, unix.SIGURG)
			unix.Nanosleep(&unix.Timespec{Nsec: 1e6}, nil)
		}
	}
}
