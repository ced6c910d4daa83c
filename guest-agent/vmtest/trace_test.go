package vmtest

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	agent "github.com/vmctl/vmctl/api/agent/v1"

	"github.com/vmctl/vmctl/api/agent/contract"
	"github.com/vmctl/vmctl/guest-agent/internal/testenv"
)

// TestTraceTimesContainerStart boots with vmctl.trace, runs one container as
// `vmctl run` does, and checks that the console carries the step table:
// the agent's steps and the container init's, in time order. Run it with -v
// to read the in-guest breakdown of a container's start.
func TestTraceTimesContainerStart(t *testing.T) {
	testenv.RequireRoot(t)
	image := testenv.Ext4Image(t, testenv.BusyboxRoot(t, ""), "16M")
	writable := testenv.Ext4Image(t, "", "64M")
	g := boot(t, bootOpts{cmdline: contract.TraceFlag, disks: []disk{{image, "img0", true}, {writable, "rw0", false}}, connect: true})
	out, _, wait := g.runKept(t, "c1", dockerSpec("vmbox", "echo", "hi"))
	if out != "hi\n" || wait.ExitStatus != 0 {
		t.Fatalf("echo hi = %q, %+v", out, wait)
	}
	// The end of a `vmctl run --rm`: the engine asks the agent to shut down.
	if _, err := g.agent.Shutdown(ctxT(t), &agent.ShutdownRequest{}); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	g.waitExit(t, 30*time.Second)
	b, err := os.ReadFile(g.console)
	if err != nil {
		t.Fatal(err)
	}
	var steps []string
	line := regexp.MustCompile(`vmctl-agent: trace +([0-9.]+) ms +([-+][0-9.]+) ms  (.*)`)
	for _, m := range line.FindAllStringSubmatch(string(b), -1) {
		steps = append(steps, strings.TrimSpace(m[3]))
		t.Logf("%10s ms %9s ms  %s", m[1], m[2], strings.TrimSpace(m[3]))
	}
	want := []string{"agent: main", "create: request", "storage: overlay mounted", "init: main (after runtime and package init)",
		"init: pivot_root", "create: init ready", "start: user command exec'd", "read: first output",
		"shutdown: request", "remove: processes reaped", "remove: rootfs and disks unmounted", "shutdown: synced"}
	at := 0
	for _, s := range steps {
		if at < len(want) && s == want[at] {
			at++
		}
	}
	if at < len(want) {
		t.Errorf("trace steps %q lack %q (or have it out of order)", steps, want[at])
	}
}
