package storage

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vmctl/vmctl/api/agent/contract"
	"github.com/vmctl/vmctl/guest-agent/internal/testenv"
)

func TestValidate(t *testing.T) {
	img := Disk{Serial: "img", Role: contract.RoleImage}
	rw := Disk{Serial: "rw", Role: contract.RoleWritable}
	rootfs := Disk{Serial: "vmctl-rootfs", Role: contract.RoleRootfs, FSType: "virtiofs"}
	tests := []struct {
		name  string
		disks []Disk
		valid bool
	}{
		{"image only", []Disk{img}, true},
		{"image and writable", []Disk{img, rw}, true},
		{"two images", []Disk{img, {Serial: "img2", Role: contract.RoleImage}, rw}, true},
		{"none", nil, false},
		{"writable only", []Disk{rw}, false},
		{"two writable", []Disk{img, rw, {Serial: "rw2", Role: contract.RoleWritable}}, false},
		{"unknown role", []Disk{img, {Serial: "x", Role: "scratch"}}, false},
		{"empty serial", []Disk{{Role: contract.RoleImage}}, false},
		{"long serial", []Disk{{Serial: strings.Repeat("s", 21), Role: contract.RoleImage}}, false},
		{"slash in serial", []Disk{{Serial: "a/b", Role: contract.RoleImage}}, false},
		{"duplicate serial", []Disk{img, {Serial: "img", Role: contract.RoleWritable}}, false},
		{"read-only writable", []Disk{img, {Serial: "rw", Role: contract.RoleWritable, ReadOnly: true}}, false},
		{"comma in option", []Disk{{Serial: "img", Role: contract.RoleImage, Options: []string{"a,b"}}}, false},
		{"bad fstype", []Disk{{Serial: "img", Role: contract.RoleImage, FSType: "ext4,x"}}, false},
		{"rootfs share", []Disk{rootfs}, true},
		{"rootfs share and volume", []Disk{rootfs, {Serial: "v", Role: contract.RoleVolume, MountPoint: "/data"}}, true},
		{"rootfs share over 9p", []Disk{{Serial: "r", Role: contract.RoleRootfs, FSType: "9p"}}, true},
		{"rootfs share on a disk", []Disk{{Serial: "r", Role: contract.RoleRootfs, FSType: "ext4"}}, false},
		{"rootfs share with image", []Disk{rootfs, img}, false},
		{"rootfs share with writable", []Disk{rootfs, rw}, false},
		{"two rootfs shares", []Disk{rootfs, {Serial: "r2", Role: contract.RoleRootfs, FSType: "virtiofs"}}, false},
		{"rootfs share with mount point", []Disk{{Serial: "r", Role: contract.RoleRootfs, FSType: "virtiofs", MountPoint: "/x"}}, false},
		{"rootfs share subdir", []Disk{{Serial: "r", Role: contract.RoleRootfs, FSType: "virtiofs", Subdir: "c1"}}, true},
		{"rootfs share subdir with a slash", []Disk{{Serial: "r", Role: contract.RoleRootfs, FSType: "virtiofs", Subdir: "a/b"}}, false},
		{"rootfs share subdir ..", []Disk{{Serial: "r", Role: contract.RoleRootfs, FSType: "virtiofs", Subdir: ".."}}, false},
		{"subdir on an image", []Disk{{Serial: "img", Role: contract.RoleImage, Subdir: "c1"}}, false},
		{"a pod's share: rootfs and binds from subdirs", []Disk{
			{Serial: "r", Role: contract.RoleRootfs, FSType: "virtiofs", Subdir: "c1"},
			{Serial: "r", Role: contract.RoleBind, FSType: "virtiofs", Subdir: "c1.v0", MountPoint: "/data"},
			{Serial: "r", Role: contract.RoleBind, FSType: "virtiofs", Subdir: "c1.v1", MountPoint: "/conf"},
		}, true},
		{"the same subdir twice", []Disk{
			{Serial: "r", Role: contract.RoleRootfs, FSType: "virtiofs", Subdir: "c1"},
			{Serial: "r", Role: contract.RoleBind, FSType: "virtiofs", Subdir: "c1", MountPoint: "/data"},
		}, false},
	}
	for _, tt := range tests {
		err := Validate(tt.disks)
		if tt.valid != (err == nil) || (!tt.valid && !errors.Is(err, ErrInvalid)) {
			t.Errorf("%s: Validate = %v, want valid %v", tt.name, err, tt.valid)
		}
	}
}

func TestFindBySerial(t *testing.T) {
	m := &Manager{SysBlock: testenv.FakeSysBlock(t, map[string]string{"vda": "image-1\n", "vdb": "rw-1", "vdc": ""}), DevDir: "/dev"}
	tests := []struct {
		serial, want string
		wantErr      error
	}{
		{"image-1", "/dev/vda", nil},
		{"rw-1", "/dev/vdb", nil},
		{"image", "", ErrNotFound},
		{"missing", "", ErrNotFound},
	}
	for _, tt := range tests {
		got, err := m.FindBySerial(tt.serial)
		if got != tt.want || !errors.Is(err, tt.wantErr) {
			t.Errorf("FindBySerial(%q) = %q, %v; want %q, %v", tt.serial, got, err, tt.want, tt.wantErr)
		}
	}
}

// loopDisk makes an ext4 image from files and attaches it to a loop device.
func loopDisk(t *testing.T, files map[string]string) string {
	t.Helper()
	src := t.TempDir()
	for name, content := range files {
		os.MkdirAll(filepath.Dir(filepath.Join(src, name)), 0o755)
		if err := os.WriteFile(filepath.Join(src, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return testenv.Loop(t, testenv.Ext4Image(t, src, "8M"))
}

func TestMountOverlayAndPersistence(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts disks")
	}
	image := loopDisk(t, map[string]string{"etc/hostname": "image\n", "bin/app": "app"})
	writable := loopDisk(t, nil)
	sys := testenv.FakeSysBlock(t, map[string]string{
		filepath.Base(image): "img-serial", filepath.Base(writable): "rw-serial",
	})
	m := &Manager{SysBlock: sys, DevDir: "/dev", BaseDir: t.TempDir()}
	disks := []Disk{
		{Serial: "img-serial", Role: contract.RoleImage},
		{Serial: "rw-serial", Role: contract.RoleWritable, Options: []string{"noatime"}},
	}

	rootfs, err := m.Mount("c1", disks)
	if err != nil {
		t.Fatalf("Mount: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(rootfs, "etc/hostname")); err != nil || string(b) != "image\n" {
		t.Errorf("image file through the overlay = %q, %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "etc/hostname"), []byte("changed\n"), 0o644); err != nil {
		t.Fatalf("write through the overlay: %v", err)
	}
	if err := m.Unmount("c1"); err != nil {
		t.Fatalf("Unmount: %v", err)
	}
	if _, err := os.Stat(m.Dir("c1")); !os.IsNotExist(err) {
		t.Errorf("container dir left behind: %v", err)
	}

	// Started again: the change is on the writable disk, the image is intact.
	rootfs, err = m.Mount("c1", disks)
	if err != nil {
		t.Fatalf("second Mount: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(rootfs, "etc/hostname")); string(b) != "changed\n" {
		t.Errorf("after remount the overlay shows %q, want the change", b)
	}
	if err := m.Unmount("c1"); err != nil {
		t.Fatalf("second Unmount: %v", err)
	}
	if err := m.Unmount("c1"); err != nil {
		t.Errorf("Unmount again = %v, want nil", err)
	}

	// Image alone: a read-only rootfs.
	rootfs, err = m.Mount("c2", disks[:1])
	if err != nil {
		t.Fatalf("Mount image only: %v", err)
	}
	defer m.Unmount("c2")
	if b, _ := os.ReadFile(filepath.Join(rootfs, "etc/hostname")); string(b) != "image\n" {
		t.Errorf("image-only rootfs shows %q, want the original", b)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "x"), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Errorf("write to the image-only rootfs = %v, want EROFS", err)
	}
}

func TestMountMissingDiskCleansUp(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts disks")
	}
	m := &Manager{SysBlock: testenv.FakeSysBlock(t, nil), DevDir: "/dev", BaseDir: t.TempDir()}
	_, err := m.Mount("c", []Disk{{Serial: "nope", Role: contract.RoleImage}})
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("Mount of a missing disk = %v, want ErrNotFound", err)
	}
	if _, err := os.Stat(m.Dir("c")); !os.IsNotExist(err) {
		t.Errorf("failed Mount left %s behind", m.Dir("c"))
	}
}
