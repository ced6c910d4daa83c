package container

import (
	"os"
	"strconv"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// A container without a pids limit gets the VM's pid_max less the agent's
// reserve.
func TestDefaultPidsLimit(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/kernel/pid_max")
	if err != nil {
		t.Skip(err)
	}
	max, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	got, ok := defaultPidsLimit()
	if !ok || got != max-agentPidsReserve {
		t.Errorf("defaultPidsLimit() = %d, %v; want %d", got, ok, max-agentPidsReserve)
	}
	limit := int64(10)
	if !hasPidsLimit(&specs.LinuxResources{Pids: &specs.LinuxPids{Limit: &limit}}) || hasPidsLimit(nil) || hasPidsLimit(&specs.LinuxResources{}) {
		t.Error("hasPidsLimit")
	}
}
