package nested

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmctl/vmctl/api/agent/contract"
	"github.com/vmctl/vmctl/internal/nested"
)

// Paths inside L1 of the container scenario's disks.
const (
	l1ImageDisk    = "guest/busybox.ext4"
	l1WritableDisk = "guest/rw.ext4"
)

func init() {
	register(scenario{
		test: "TestVMMContainer",
		Scenario: nested.Scenario{Name: "vmm-container", Timeout: 75 * time.Second, Script: prelude + `
rel=$(cat ` + l1Release + `)
vmctl-vmm -kernel ` + l1Kernel + ` -initrd ` + l1Image + ` -memory 256 -vsock-uds /tmp/ctr.vsock \
	-disk ` + l1ImageDisk + `,serial=` + contract.ImageDiskSerial + `,ro -disk ` + l1WritableDisk + `,serial=` + contract.WritableDiskSerial + ` -console - &
vmm=$!
if ! agentcheck -uds /tmp/ctr.vsock -timeout 60s -release "$rel" -container "uname -r" -shutdown; then
	kill $vmm
	wait $vmm
	echo "the container did not print the guest kernel's release"
	exit 1
fi
wait $vmm
rc=$?
echo "uname -r in a container under vmctl-vmm printed $rel; vmctl-vmm exited with $rc"
[ "$rc" = 0 ]
`},
		needs: append(vmmNeeds, "bin/guest/initramfs.img", "bin/guest/kernel.release"),
		files: containerFiles,
	})
}

// containerFiles are the L1 files of scenarios that run a container under
// vmctl-vmm through agentcheck: the agent image, a busybox image disk and
// an empty writable disk.
func containerFiles(root, tmp string) ([]nested.File, error) {
	check, err := buildStatic(root, tmp, "./tests/nested/testdata/agentcheck")
	if err != nil {
		return nil, err
	}
	image, err := busyboxExt4(tmp)
	if err != nil {
		return nil, err
	}
	rw, err := ext4Image(tmp, "rw.ext4", "", 32)
	if err != nil {
		return nil, err
	}
	return append(vmmFiles(root),
		nested.File{Path: "nested/bin/agentcheck", Source: check},
		nested.File{Path: "nested/" + l1Image, Source: filepath.Join(root, "bin/guest/initramfs.img")},
		nested.File{Path: "nested/" + l1Release, Source: filepath.Join(root, "bin/guest/kernel.release")},
		nested.File{Path: "nested/" + l1ImageDisk, Source: image},
		nested.File{Path: "nested/" + l1WritableDisk, Source: rw},
	), nil
}

// busyboxExt4 builds a one-binary container image disk: /bin/busybox with
// sh and uname linked to it, and the usual top-level directories.
func busyboxExt4(tmp string) (string, error) {
	dir, err := os.MkdirTemp(tmp, "busybox-rootfs-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	for _, d := range []string{"bin", "dev", "proc", "sys", "tmp", "etc"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			return "", err
		}
	}
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return "", fmt.Errorf("busybox for the container image: %w (install busybox-static)", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin/busybox"), bb, 0o755); err != nil {
		return "", err
	}
	for _, l := range []string{"sh", "uname", "echo", "cat"} {
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", l)); err != nil {
			return "", err
		}
	}
	return ext4Image(tmp, "busybox.ext4", dir, 16)
}

// ext4Image makes an ext4 file system image of sizeMiB in tmp, filled from
// dir when dir is not empty.
func ext4Image(tmp, name, dir string, sizeMiB int) (string, error) {
	out := filepath.Join(tmp, name)
	if err := os.WriteFile(out, nil, 0o644); err != nil {
		return "", err
	}
	if err := os.Truncate(out, int64(sizeMiB)<<20); err != nil {
		return "", err
	}
	args := []string{"-q", "-F", "-t", "ext4"}
	if dir != "" {
		args = append(args, "-d", dir)
	}
	args = append(args, out)
	if b, err := exec.Command("mkfs.ext4", args...).CombinedOutput(); err != nil {
		return "", fmt.Errorf("mkfs.ext4 %s: %w: %s (install e2fsprogs)", name, err, b)
	}
	return out, nil
}

// TestVMMContainer: under vmctl-vmm, the agent runs `uname -r` in a
// container on an ext4 image disk plus a writable disk (the engine's
// serials and roles) and the container prints the project kernel's
// release.
func TestVMMContainer(t *testing.T) {
	r := result(t, "vmm-container")
	for _, line := range strings.Split(r.Output, "\n") {
		if strings.HasPrefix(line, "agentcheck: ") {
			t.Log(strings.TrimSpace(line))
		}
	}
}
