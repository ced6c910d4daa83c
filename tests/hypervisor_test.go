package tests

import (
	"strings"
	"testing"
	"time"

	"github.com/vmctl/vmctl/engine/sandbox"
)

// `vmctl info` names the driver auto picks here and why; a container
// created with auto keeps that choice, which inspect shows where docker
// shows the runtime; asking for the native VMM where it cannot run fails
// at once with one line.
func TestHypervisorChoice(t *testing.T) {
	e := e2e(t)
	r := e.mustRun(t, 0, "info")
	choice, err := sandbox.Choose("auto")
	must(t, err)
	if !strings.Contains(r.stdout, "Hypervisor:     "+choice.Driver) || !strings.Contains(r.stdout, choice.Reason) {
		t.Errorf("info does not say %s / %q:\n%s", choice.Driver, choice.Reason, r.stdout)
	}
	d := startDaemon(t)
	d.mustVmctl(t, 0, "", "create", "--name", "hvchoice", "busybox", "true")
	r = d.mustVmctl(t, 0, "", "inspect", "-f", "{{.HostConfig.Runtime}}", "hvchoice")
	if got := strings.TrimSpace(r.stdout); got != choice.Driver {
		t.Errorf("inspect of a container created with auto shows hypervisor %q, want %q", got, choice.Driver)
	}
	d.mustVmctl(t, 0, "", "rm", "hvchoice")
	if ok, _ := sandbox.KVMCapability(); ok {
		t.Skip("this host's /dev/kvm runs full guests; the failure path is for hosts without")
	}
	before := e.containerCount(t)
	start := time.Now()
	r = e.run(t, "run", "--rm", "--hypervisor", "kvm", "busybox", "echo", "ok")
	if r.code != 125 {
		t.Errorf("--hypervisor kvm: exit %d, want 125", r.code)
	}
	oneLine(t, r, "kvm")
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("--hypervisor kvm took %s to fail", d)
	}
	e.checkClean(t, before)
}
