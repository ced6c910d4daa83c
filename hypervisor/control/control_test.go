package control

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	vmmapi "github.com/vmctl/vmctl/api/vmm/v1"
	"github.com/vmctl/vmctl/hypervisor/devices"
	"github.com/vmctl/vmctl/hypervisor/machine"
	"github.com/vmctl/vmctl/hypervisor/vcpu"
)

// fakeVM follows the machine's state rules without KVM.
type fakeVM struct {
	mu    sync.Mutex
	state vcpu.State
	once  sync.Once
	done  chan struct{}
	res   vcpu.Result
}

func newFakeVM() *fakeVM { return &fakeVM{done: make(chan struct{})} }

func (f *fakeVM) move(from, to vcpu.State, op string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state == to {
		return nil
	}
	if f.state != from {
		return fmt.Errorf("%s: VM is %v: %w", op, f.state, machine.ErrState)
	}
	f.state = to
	return nil
}

func (f *fakeVM) Start() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state != vcpu.Created {
		return fmt.Errorf("start: VM is %v: %w", f.state, machine.ErrState)
	}
	f.state = vcpu.Running
	return nil
}
func (f *fakeVM) Pause() error  { return f.move(vcpu.Running, vcpu.Paused, "pause") }
func (f *fakeVM) Resume() error { return f.move(vcpu.Paused, vcpu.Running, "resume") }
func (f *fakeVM) Stop()         { f.end(vcpu.Result{Reason: vcpu.ReasonStopped, Detail: "stop requested"}) }
func (f *fakeVM) end(r vcpu.Result) {
	f.once.Do(func() {
		f.mu.Lock()
		f.state, f.res = vcpu.Exited, r
		f.mu.Unlock()
		close(f.done)
	})
}
func (f *fakeVM) Wait() vcpu.Result     { <-f.done; return f.res }
func (f *fakeVM) Done() <-chan struct{} { return f.done }
func (f *fakeVM) State() vcpu.State {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state
}
func (f *fakeVM) BootEvents() []devices.BootEvent {
	return []devices.BootEvent{{Value: 123, Since: 250 * time.Millisecond}}
}

func TestControlOverSocket(t *testing.T) {
	vm := newFakeVM()
	path := filepath.Join(t.TempDir(), "control.sock")
	srv, err := Listen(path, NewService(vm, Info{VCPUs: 2, MemoryMiB: 256, Cmdline: "console=ttyS0"}))
	if err != nil {
		t.Fatal(err)
	}
	srv.Serve()
	defer srv.Shutdown(time.Second)
	if _, err := Listen(path, NewService(vm, Info{})); err == nil {
		t.Fatal("a second server took over a live control socket")
	}
	c, closeClient, err := Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	defer closeClient()
	ctx := context.Background()

	state := func() vmmapi.State {
		t.Helper()
		st, err := c.Status(ctx, &vmmapi.StatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return st.State
	}
	if s := state(); s != vmmapi.State_STATE_CREATED {
		t.Errorf("state %v, want created", s)
	}
	if _, err := c.Pause(ctx, &vmmapi.PauseRequest{}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("Pause before Start = %v, want FailedPrecondition", err)
	}
	steps := []struct {
		call func() error
		want vmmapi.State
	}{
		{func() error { _, err := c.Start(ctx, &vmmapi.StartRequest{}); return err }, vmmapi.State_STATE_RUNNING},
		{func() error { _, err := c.Pause(ctx, &vmmapi.PauseRequest{}); return err }, vmmapi.State_STATE_PAUSED},
		{func() error { _, err := c.Pause(ctx, &vmmapi.PauseRequest{}); return err }, vmmapi.State_STATE_PAUSED},
		{func() error { _, err := c.Resume(ctx, &vmmapi.ResumeRequest{}); return err }, vmmapi.State_STATE_RUNNING},
	}
	for i, s := range steps {
		if err := s.call(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if got := state(); got != s.want {
			t.Fatalf("step %d: state %v, want %v", i, got, s.want)
		}
	}
	if _, err := c.Start(ctx, &vmmapi.StartRequest{}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("second Start = %v, want FailedPrecondition", err)
	}

	// Wait blocks until the VM ends, whoever ends it.
	waited := make(chan *vmmapi.WaitResponse, 1)
	go func() {
		r, err := c.Wait(ctx, &vmmapi.WaitRequest{})
		if err != nil {
			t.Error(err)
		}
		waited <- r
	}()
	select {
	case <-waited:
		t.Fatal("Wait returned while the VM runs")
	case <-time.After(50 * time.Millisecond):
	}
	vm.end(vcpu.Result{Reason: vcpu.ReasonTripleFault, Detail: "KVM_EXIT_SHUTDOWN"})
	r := <-waited
	if r.Exit.Reason != "triple-fault" || r.Exit.ExitCode != 10 {
		t.Errorf("Wait = %+v, want triple-fault/10", r.Exit)
	}
	st, err := c.Status(ctx, &vmmapi.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.State != vmmapi.State_STATE_EXITED || st.Exit.GetReason() != "triple-fault" || st.Vcpus != 2 ||
		st.Cmdline != "console=ttyS0" || len(st.BootEvents) != 1 || st.BootEvents[0].Value != 123 {
		t.Errorf("Status = %+v", st)
	}
	if _, err := c.Stop(ctx, &vmmapi.StopRequest{}); err != nil {
		t.Errorf("Stop after exit = %v, want nil (safe to retry)", err)
	}
}

func TestWaitHonoursContext(t *testing.T) {
	svc := NewService(newFakeVM(), Info{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := svc.Wait(ctx, &vmmapi.WaitRequest{}); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("Wait = %v, want DeadlineExceeded", err)
	}
}
