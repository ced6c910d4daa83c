package control

import (
	"context"
	"errors"
	"io"
	"os"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	vmmapi "github.com/vmctl/vmctl/api/vmm/v1"
	"github.com/vmctl/vmctl/hypervisor/machine"
	"github.com/vmctl/vmctl/hypervisor/vcpu"
)

// fakeSaver writes a fixed state, or fails as told; a failure with
// endVM set ends the VM as a machine does once its devices stopped.
type fakeSaver struct {
	vm    *fakeVM
	err   error
	endVM bool
	calls int
}

func (s *fakeSaver) Save(state io.Writer, mem *os.File) (machine.SaveStats, error) {
	s.calls++
	if s.err != nil {
		if s.endVM {
			s.vm.end(vcpu.Result{Reason: vcpu.ReasonStopped})
		}
		return machine.SaveStats{}, s.err
	}
	n, err := state.Write([]byte("state"))
	s.vm.end(vcpu.Result{Reason: vcpu.ReasonStopped, Detail: "saved"})
	return machine.SaveStats{StateBytes: n, MemoryBytes: 4096}, err
}

func TestSave(t *testing.T) {
	ctx := context.Background()
	vm := newFakeVM()
	svc := NewService(vm, Info{})
	if _, err := svc.Save(ctx, &vmmapi.SaveRequest{}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("Save without files = %v, want FailedPrecondition", err)
	}

	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := vm.Start(); err != nil {
		t.Fatal(err)
	}
	saver := &fakeSaver{vm: vm, err: errors.New("a device still has host connections")}
	svc.EnableSave(saver, SaveFiles{State: w})
	// A failure that leaves the VM running leaves the files for another try.
	if _, err := svc.Save(ctx, &vmmapi.SaveRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("Save that failed with the VM running = %v, want Unavailable", err)
	}
	saver.err = nil
	resp, err := svc.Save(ctx, &vmmapi.SaveRequest{})
	if err != nil {
		t.Fatalf("Save: %v", err)
	}
	if resp.StateBytes != 5 || resp.MemoryBytes != 4096 {
		t.Errorf("Save = %+v, want 5 bytes of state and 4096 of RAM", resp)
	}
	// The state's end is closed: a reader of the pipe sees all of it.
	b, err := io.ReadAll(r)
	if err != nil || string(b) != "state" {
		t.Fatalf("read %q, %v from the pipe; want the state, then its end", b, err)
	}
	if _, err := svc.Save(ctx, &vmmapi.SaveRequest{}); status.Code(err) != codes.FailedPrecondition || saver.calls != 2 {
		t.Fatalf("second Save = %v after %d calls, want FailedPrecondition without a call", err, saver.calls)
	}
}
