package nested

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmctl/vmctl/api/agent/contract"
	"github.com/vmctl/vmctl/internal/nested"
)

func init() {
	register(scenario{
		test: "TestQEMUKVMAgent",
		Scenario: nested.Scenario{Name: "qemu-kvm-agent", Timeout: 90 * time.Second, Script: prelude + `
rel=$(cat ` + l1Release + `)
# The QEMU driver's machine (engine/sandbox/qemu), on L1's KVM instead of TCG.
qemu-system-x86_64 -M microvm,acpi=off -enable-kvm -cpu host -m 256 \
	-nodefaults -no-user-config -nographic -no-reboot -serial stdio \
	-kernel ` + l1Kernel + ` -initrd ` + l1Image + ` -append "console=ttyS0 reboot=t panic=-1 quiet" \
	-global virtio-mmio.force-legacy=false -device virtio-serial-device,max_ports=2 \
	-chardev socket,id=agent,path=/tmp/qemu-agent.sock,server=on,wait=off \
	-device virtserialport,chardev=agent,name=` + contract.SerialPortName + ` </dev/null &
qemu=$!
if ! agentcheck -serial /tmp/qemu-agent.sock -timeout 60s -release "$rel" -shutdown; then
	kill $qemu
	wait $qemu
	echo "the agent did not answer under QEMU with KVM in L1"
	exit 1
fi
t0=$(ms)
wait $qemu
rc=$?
echo "QEMU exited with $rc $(($(ms) - t0)) ms after the agent acknowledged Shutdown"
[ "$rc" = 0 ]
`},
		needs: []string{"bin/guest/vmlinuz", "bin/guest/initramfs.img", "bin/guest/kernel.release"},
		files: func(root, tmp string) ([]nested.File, error) {
			qemu, err := exec.LookPath("qemu-system-x86_64")
			if err != nil {
				return nil, err
			}
			files, err := nested.HostExecutable(qemu, "usr/bin/qemu-system-x86_64")
			if err != nil {
				return nil, err
			}
			check, err := buildStatic(root, tmp, "./tests/nested/testdata/agentcheck")
			return append(append(files, nested.QEMUFirmware()...),
				nested.File{Path: "nested/bin/agentcheck", Source: check},
				nested.File{Path: "nested/" + l1Kernel, Source: filepath.Join(root, "bin/guest/vmlinuz")},
				nested.File{Path: "nested/" + l1Image, Source: filepath.Join(root, "bin/guest/initramfs.img")},
				nested.File{Path: "nested/" + l1Release, Source: filepath.Join(root, "bin/guest/kernel.release")},
			), err
		},
	})
}

// TestQEMUKVMAgent is the harness's reference run: QEMU with KVM inside L1
// boots the project's kernel and agent, and the agent answers over
// virtio-serial. It proves the L1 /dev/kvm runs this guest, independently
// of vmctl-vmm, and its timing is the baseline vmctl-vmm is compared with.
func TestQEMUKVMAgent(t *testing.T) {
	r := result(t, "qemu-kvm-agent")
	for _, line := range strings.Split(r.Output, "\n") {
		if strings.HasPrefix(line, "agentcheck: ") {
			t.Log(strings.TrimSpace(line))
		}
	}
}
