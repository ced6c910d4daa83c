package nested

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmctl/vmctl/internal/nested"
)

func init() {
	register(scenario{
		test: "TestVMMAgent",
		Scenario: nested.Scenario{Name: "vmm-agent", Timeout: 75 * time.Second, Script: prelude + `
rel=$(cat ` + l1Release + `)
vmctl-vmm -kernel ` + l1Kernel + ` -initrd ` + l1Image + ` -memory 256 -vsock-uds /tmp/agent.vsock -console - &
vmm=$!
if ! agentcheck -uds /tmp/agent.vsock -timeout 60s -release "$rel" -shutdown; then
	kill $vmm
	wait $vmm
	echo "the agent did not answer through vmctl-vmm's vsock"
	exit 1
fi
t0=$(ms)
wait $vmm
rc=$?
took=$(($(ms) - t0))
echo "vmctl-vmm exited with $rc ${took} ms after the agent acknowledged Shutdown"
[ "$rc" = 0 ] && [ "$took" -le 5000 ]
`},
		needs: append(vmmNeeds, "bin/guest/initramfs.img", "bin/guest/kernel.release"),
		files: func(root, tmp string) ([]nested.File, error) {
			check, err := buildStatic(root, tmp, "./tests/nested/testdata/agentcheck")
			return append(vmmFiles(root),
				nested.File{Path: "nested/bin/agentcheck", Source: check},
				nested.File{Path: "nested/" + l1Image, Source: filepath.Join(root, "bin/guest/initramfs.img")},
				nested.File{Path: "nested/" + l1Release, Source: filepath.Join(root, "bin/guest/kernel.release")},
			), err
		},
	})
}

// TestVMMAgent: vmctl-vmm boots the project's kernel and agent as L2, the
// agent answers Health over hybrid vsock with the project kernel's release,
// and its Shutdown (a guest reboot) ends vmctl-vmm with exit code 0 within
// 5 s.
func TestVMMAgent(t *testing.T) {
	r := result(t, "vmm-agent")
	for _, line := range strings.Split(r.Output, "\n") {
		if strings.HasPrefix(line, "agentcheck: ") {
			t.Log(strings.TrimSpace(line))
		}
	}
}
