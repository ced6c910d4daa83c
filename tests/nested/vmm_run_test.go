package nested

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/vmctl/vmctl/internal/nested"
)

func init() {
	register(scenario{
		test: "TestVMMRun",
		Scenario: nested.Scenario{Name: "vmm-run", Timeout: 210 * time.Second, Script: prelude + `
mkdir -p /tmp/d /run/v
cd /x
if ! /x/vmctl --data-root /tmp/d --exec-root /run/v load -i busybox.tar; then
	echo "vmctl load failed"
	exit 1
fi
t0=$(ms)
out=$(/x/vmctl --data-root /tmp/d --exec-root /run/v run --hypervisor kvm --rm busybox echo ok 2>&1)
rc=$?
took=$(($(ms) - t0))
echo "$out"
echo "vmctl run --hypervisor kvm --rm busybox echo ok exited with $rc in ${took} ms, printed: $(echo "$out" | tail -n 1)"
[ "$rc" = 0 ] && [ "$(echo "$out" | tail -n 1)" = ok ] || exit 1
# The container's NIC is vmctl-vmm's virtio-net on a tap on vmctl0: an
# address on the default network, and TCP to a server of L1's.
mkdir -p /tmp/www && echo page >/tmp/www/index.html
httpd -p 8000 -h /tmp/www || { echo "httpd in L1 failed"; exit 1; }
out=$(/x/vmctl --data-root /tmp/d --exec-root /run/v run --hypervisor kvm --rm busybox sh -c \
	'ip -4 -o addr show eth0; timeout 20 wget -q -O- http://172.30.0.1:8000/ || exit 1' 2>&1)
rc=$?
echo "$out"
echo "networked run exited with $rc"
[ "$rc" = 0 ] && echo "$out" | grep -q "inet 172\.30\." && [ "$(echo "$out" | tail -n 1)" = page ] || exit 1
# A bind mount: vmctl-vmm's virtio-9p device serves an L1 directory; the
# container reads L1's file, writes one of its own, cannot write a :ro
# bind, and a symlink L1 has pointing out of the share is not followed.
mkdir -p /tmp/bind && echo from-l1 >/tmp/bind/h && echo secret >/tmp/secret && ln -s /tmp/secret /tmp/bind/out
out=$(/x/vmctl --data-root /tmp/d --exec-root /run/v run --hypervisor kvm --rm -v /tmp/bind:/b busybox sh -c \
	'cat /b/h; echo from-l2 >/b/g; cat /b/out 2>/dev/null; mount | grep " /b "' 2>&1)
rc=$?
echo "$out"
echo "bind-mounted run exited with $rc; L1 reads: $(cat /tmp/bind/g 2>&1)"
[ "$rc" = 0 ] && [ "$(echo "$out" | head -n 1)" = from-l1 ] && echo "$out" | grep -q " type 9p " && [ "$(cat /tmp/bind/g)" = from-l2 ] || exit 1
out=$(/x/vmctl --data-root /tmp/d --exec-root /run/v run --hypervisor kvm --rm -v /tmp/bind:/b:ro busybox sh -c 'echo x >/b/h' 2>&1)
rc=$?
echo "read-only bind: exit $rc: $out"
[ "$rc" != 0 ] && echo "$out" | grep -q "Read-only file system" && [ "$(cat /tmp/bind/h)" = from-l1 ] || exit 1
# The VMM as L1 sees it while its guest runs: jailed (its own uid, no
# capabilities, an empty root) and filtered (every thread, and a second
# filter on the vCPU thread).
/x/vmctl --data-root /tmp/d --exec-root /run/v run --hypervisor kvm --rm busybox sleep 15 >/tmp/sleep.out 2>&1 &
vmm=
for i in $(seq 100); do
	for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = vmctl-vmm ] && vmm=${p#/proc/}; done
	[ -n "$vmm" ] && grep -q "^Uid:[[:space:]]*19" /proc/$vmm/status 2>/dev/null && break
	sleep 0.1
done
[ -n "$vmm" ] || { echo "no vmctl-vmm process while a container runs"; exit 1; }
sleep 2
grep -E "^(Uid|Gid|CapEff|CapBnd|NoNewPrivs|Seccomp|Seccomp_filters):" /proc/$vmm/status
filters=$(cat /proc/$vmm/task/*/status | grep "^Seccomp_filters:" | awk '{print $2}' | sort -u | tr '\n' ' ')
root=$(ls -A /proc/$vmm/root | tr '\n' ' ')
echo "VMM $vmm: thread filter counts: $filters; root holds: [$root]"
grep -q "^Uid:[[:space:]]*19[0-9]*[[:space:]]" /proc/$vmm/status && grep -q "^CapEff:[[:space:]]*0000000000000000" /proc/$vmm/status &&
	grep -q "^NoNewPrivs:[[:space:]]*1" /proc/$vmm/status && grep -q "^Seccomp:[[:space:]]*2" /proc/$vmm/status &&
	[ "$filters" = "1 2 " ] && [ -z "$root" ] || { echo "vmctl-vmm is not confined"; exit 1; }
wait
`},
		needs: append(vmmNeeds, "bin/vmctl", "bin/guest/initramfs.img", "build/busybox.tar"),
		files: vmctlRunFiles,
	})
}

// vmctlRunFiles lays out the engine as an install would, in L1's /x:
// vmctl (built static here), vmctl-vmm next to it, the guest kernel and
// image under guest/, the e2fsprogs the engine runs to build disks (with
// their libraries) and an image archive to load.
func vmctlRunFiles(root, tmp string) ([]nested.File, error) {
	vmctl := filepath.Join(tmp, "vmctl-static")
	if _, err := os.Stat(vmctl); err != nil {
		cmd := exec.Command("go", "build", "-trimpath", "-o", vmctl, "./cmd/vmctl")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build ./cmd/vmctl: %w: %s", err, b)
		}
	}
	files := []nested.File{
		{Path: "x/vmctl", Source: vmctl, Mode: 0o755},
		{Path: "x/vmctl-vmm", Source: filepath.Join(root, "bin/vmctl-vmm"), Mode: 0o755},
		{Path: "x/guest/vmlinuz", Source: filepath.Join(root, "bin/guest/vmlinuz"), Mode: 0o644},
		{Path: "x/guest/initramfs.img", Source: filepath.Join(root, "bin/guest/initramfs.img"), Mode: 0o644},
		{Path: "x/busybox.tar", Source: filepath.Join(root, "build/busybox.tar"), Mode: 0o644},
	}
	for _, tool := range []string{"mkfs.ext4", "tune2fs"} {
		src, err := exec.LookPath(tool)
		if err != nil {
			return nil, fmt.Errorf("%s for the engine in L1: %w (install e2fsprogs)", tool, err)
		}
		f, err := nested.HostExecutable(src, "usr/sbin/"+tool)
		if err != nil {
			return nil, err
		}
		files = append(files, f...)
	}
	return files, nil
}

// TestVMMRun: inside L1, `vmctl run --hypervisor kvm --rm busybox echo ok`
// loads the image, runs the container in a vmctl-vmm VM and prints ok;
// a second run, on the default network, fetches a page from L1 over its
// NIC.
func TestVMMRun(t *testing.T) {
	r := result(t, "vmm-run")
	t.Log(r.Output)
}
