package vcpu

import (
	"errors"
	"io/fs"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmctl/vmctl/hypervisor/bus"
	"github.com/vmctl/vmctl/hypervisor/devices"
	"github.com/vmctl/vmctl/hypervisor/kvm"
	"github.com/vmctl/vmctl/hypervisor/memory"
)

// codeAddr is where tiny guests start, in real mode with CS=0.
const codeAddr = 0x1000

// tinyGuest is a one-vCPU VM with 64 KiB of RAM running code in real mode.
type tinyGuest struct {
	vm    *kvm.VM
	cpu   *kvm.VCPU
	mem   *memory.Guest
	buses Buses
}

func newTinyGuest(t testing.TB, code []byte, irqchip bool) *tinyGuest {
	t.Helper()
	sys, err := kvm.Open("/dev/kvm")
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) {
		t.Skipf("needs a usable /dev/kvm: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer sys.Close()
	g := &tinyGuest{buses: Buses{PIO: bus.New("pio"), MMIO: bus.New("mmio")}}
	if g.vm, err = sys.CreateVM(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.vm.Close() })
	if g.mem, err = memory.NewGuest([]memory.Range{{GPA: 0, Size: 0x10000}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.mem.Close() })
	if err := g.mem.WriteAt(code, codeAddr); err != nil {
		t.Fatal(err)
	}
	if err := g.vm.SetUserMemoryRegion(0, 0, g.mem.Regions()[0].Host); err != nil {
		t.Fatal(err)
	}
	if err := g.vm.SetTSSAddr(0xfffbd000); err != nil {
		t.Fatal(err)
	}
	if irqchip {
		if err := g.vm.CreateIRQChip(); err != nil {
			t.Fatal(err)
		}
		if err := g.vm.CreatePIT2(); err != nil {
			t.Fatal(err)
		}
	}
	if g.cpu, err = g.vm.CreateVCPU(0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.cpu.Close() })
	sr, err := g.cpu.Sregs()
	if err != nil {
		t.Fatal(err)
	}
	sr.CS.Base, sr.CS.Selector = 0, 0
	if err := g.cpu.SetSregs(sr); err != nil {
		t.Fatal(err)
	}
	if err := g.cpu.SetRegs(kvm.Regs{RIP: codeAddr, RFLAGS: 2}); err != nil {
		t.Fatal(err)
	}
	return g
}

// run starts a vCPU on g and waits for it to end, failing after a timeout.
func (g *tinyGuest) run(t *testing.T, setup func(v *VCPU)) Result {
	t.Helper()
	v := New(0, g.cpu, g.buses, nil)
	if setup != nil {
		setup(v)
	}
	if err := v.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-v.Done():
	case <-time.After(10 * time.Second):
		v.RequestStop(Result{ReasonStopped, "test timeout"})
		v.Wait()
		t.Fatal("tiny guest did not finish within 10s")
	}
	return v.Wait()
}

// stopOnFailure ends v before the test's cleanups close its fd.
func stopOnFailure(t *testing.T, v *VCPU) {
	t.Cleanup(func() {
		v.RequestStop(Result{ReasonStopped, "test cleanup"})
		v.Wait()
	})
}

// lockedRecorder is a recorder safe to read from the test goroutine.
type lockedRecorder struct {
	mu sync.Mutex
	recorder
}

func (r *lockedRecorder) Read(off uint64, d []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recorder.Read(off, d)
}

func (r *lockedRecorder) Write(off uint64, d []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recorder.Write(off, d)
}

func TestGuestPIO(t *testing.T) {
	code := []byte{
		0xb0, 0x42, // mov al, 0x42
		0xe6, 0x10, // out 0x10, al
		0xb8, 0x34, 0x12, // mov ax, 0x1234
		0xe7, 0x12, // out 0x12, ax
		0xe4, 0x11, // in al, 0x11   (device answers 0x77)
		0xe6, 0x13, // out 0x13, al
		0xf4, // hlt
	}
	g := newTinyGuest(t, code, false)
	dev := &lockedRecorder{recorder: recorder{fill: 0x77}}
	if err := g.buses.PIO.Register(0x10, 4, "test", dev); err != nil {
		t.Fatal(err)
	}
	r := g.run(t, nil)
	if r.Reason != ReasonHalt {
		t.Fatalf("result %v, want halt", r)
	}
	want := []access{{0, true, "\x42"}, {2, true, "\x34\x12"}, {1, false, "\x77"}, {3, true, "\x77"}}
	if !equal(dev.seen, want) {
		t.Errorf("device saw %+v, want %+v", dev.seen, want)
	}
}

func TestGuestMMIO(t *testing.T) {
	code := []byte{
		0xb8, 0x00, 0x20, // mov ax, 0x2000
		0x8e, 0xd8, // mov ds, ax          (DS base 0x20000, outside RAM)
		0xc6, 0x06, 0x10, 0x00, 0x5a, // mov byte [0x10], 0x5a
		0x66, 0x8b, 0x1e, 0x14, 0x00, // mov ebx, [0x14]   (device answers 0x88888888)
		0x66, 0x89, 0x1e, 0x18, 0x00, // mov [0x18], ebx
		0xf4, // hlt
	}
	g := newTinyGuest(t, code, false)
	dev := &lockedRecorder{recorder: recorder{fill: 0x88}}
	if err := g.buses.MMIO.Register(0x20000, 0x200, "test", dev); err != nil {
		t.Fatal(err)
	}
	r := g.run(t, nil)
	if r.Reason != ReasonHalt {
		t.Fatalf("result %v, want halt", r)
	}
	want := []access{{0x10, true, "\x5a"}, {0x14, false, "\x88\x88\x88\x88"}, {0x18, true, "\x88\x88\x88\x88"}}
	if !equal(dev.seen, want) {
		t.Errorf("device saw %+v, want %+v", dev.seen, want)
	}
}

// With an in-kernel irqchip HLT never leaves the kernel; the guest ends by
// pulsing the i8042 reset line, as Linux does with reboot=k.
func TestGuestI8042Reboot(t *testing.T) {
	code := []byte{
		0xb0, 0xfe, // mov al, 0xfe
		0xe6, 0x64, // out 0x64, al
		0xeb, 0xfe, // jmp $  (must not be reached for long)
	}
	g := newTinyGuest(t, code, true)
	r := g.run(t, func(v *VCPU) {
		k := devices.NewI8042(func() { v.RequestStop(Result{ReasonReboot, "i8042 reset"}) })
		if err := g.buses.PIO.Register(devices.I8042Base, devices.I8042Size, "i8042", k); err != nil {
			t.Fatal(err)
		}
	})
	if r.Reason != ReasonReboot || r.Reason.ExitCode() != 0 {
		t.Fatalf("result %v (code %d), want reboot (code 0)", r, r.Reason.ExitCode())
	}
}

// A fault with an empty IDT cannot be delivered, nor can the #GP and #DF
// that follow: the CPU shuts down. The guest runs in 16-bit protected mode
// because this is what every KVM flavour handles in hardware (PVM cannot
// deliver real-mode exceptions at all).
func TestGuestTripleFault(t *testing.T) {
	g := newTinyGuest(t, []byte{0x0f, 0x0b}, false) // ud2
	sr, err := g.cpu.Sregs()
	if err != nil {
		t.Fatal(err)
	}
	sr.CR0 |= 1 // PE
	sr.CS = kvm.Segment{Limit: 0xffffffff, Selector: 8, Type: 11, Present: 1, S: 1, G: 1}
	data := kvm.Segment{Limit: 0xffffffff, Selector: 0x10, Type: 3, Present: 1, DB: 1, S: 1, G: 1}
	sr.DS, sr.ES, sr.SS, sr.FS, sr.GS = data, data, data, data, data
	sr.GDT = kvm.DTable{Base: 0x3000, Limit: 0x17}
	sr.IDT = kvm.DTable{Base: 0x3000, Limit: 0}
	if err := g.cpu.SetSregs(sr); err != nil {
		t.Fatal(err)
	}
	r := g.run(t, nil)
	if r.Reason != ReasonTripleFault || r.Reason.ExitCode() != 10 {
		t.Fatalf("result %v (code %d), want triple-fault (code 10)", r, r.Reason.ExitCode())
	}
}

func TestGuestPauseResumeStop(t *testing.T) {
	code := []byte{
		0xff, 0x06, 0x00, 0x05, // inc word [0x500]
		0xeb, 0xfa, // jmp back to the inc
	}
	g := newTinyGuest(t, code, true)
	v := New(0, g.cpu, g.buses, nil)
	if err := v.Pause(); !errors.Is(err, ErrNotStarted) {
		t.Errorf("Pause before Start = %v, want ErrNotStarted", err)
	}
	if err := v.Start(); err != nil {
		t.Fatal(err)
	}
	stopOnFailure(t, v)
	counter := func() uint16 {
		c, err := g.mem.ReadUint16(0x500)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	waitProgress := func() {
		t.Helper()
		start := counter()
		deadline := time.Now().Add(5 * time.Second)
		for counter() == start {
			if time.Now().After(deadline) {
				t.Fatal("guest makes no progress while running")
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitProgress()
	for i := 0; i < 3; i++ {
		if err := v.Pause(); err != nil {
			t.Fatal(err)
		}
		if v.State() != Paused {
			t.Fatalf("state %v after Pause", v.State())
		}
		c := counter()
		time.Sleep(20 * time.Millisecond)
		if counter() != c {
			t.Fatal("guest ran while paused")
		}
		if err := v.Resume(); err != nil {
			t.Fatal(err)
		}
		if v.State() != Running {
			t.Fatalf("state %v after Resume", v.State())
		}
		waitProgress()
	}
	v.RequestStop(Result{ReasonStopped, "test"})
	select {
	case <-v.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("spinning guest did not stop")
	}
	if r := v.Wait(); r.Reason != ReasonStopped || v.State() != Exited {
		t.Errorf("result %v state %v, want stopped/exited", r, v.State())
	}
	if err := v.Pause(); !errors.Is(err, ErrExited) {
		t.Errorf("Pause after exit = %v, want ErrExited", err)
	}
}

// A stop requested while paused ends the vCPU without resuming the guest.
func TestGuestStopWhilePaused(t *testing.T) {
	g := newTinyGuest(t, []byte{0xeb, 0xfe}, false)
	v := New(0, g.cpu, g.buses, nil)
	if err := v.Start(); err != nil {
		t.Fatal(err)
	}
	stopOnFailure(t, v)
	if err := v.Pause(); err != nil {
		t.Fatal(err)
	}
	v.RequestStop(Result{ReasonStopped, "test"})
	v.RequestStop(Result{ReasonReboot, "second request loses"})
	if r := v.Wait(); r.Reason != ReasonStopped {
		t.Errorf("result %v, want stopped", r)
	}
}

// Do runs a function on the paused vCPU's own thread and returns its
// error; a vCPU that is not paused refuses it.
func TestGuestDoWhilePaused(t *testing.T) {
	g := newTinyGuest(t, []byte{0xeb, 0xfe}, false)
	v := New(0, g.cpu, g.buses, nil)
	if err := v.Start(); err != nil {
		t.Fatal(err)
	}
	stopOnFailure(t, v)
	if err := v.Do(func() error { return nil }); err == nil {
		t.Fatal("Do on a running vCPU succeeded")
	}
	if err := v.Pause(); err != nil {
		t.Fatal(err)
	}
	var tid int
	want := errors.New("from the vCPU thread")
	if err := v.Do(func() error { tid = unix.Gettid(); return want }); err != want {
		t.Fatalf("Do = %v, want the function's error", err)
	}
	if tid != int(v.tid.Load()) {
		t.Fatalf("Do ran on thread %d, the vCPU's is %d", tid, v.tid.Load())
	}
	if v.State() != Paused {
		t.Fatalf("state %v after Do, want paused", v.State())
	}
	v.RequestStop(Result{ReasonStopped, "test"})
	v.Wait()
}
