package storage

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/vmctl/vmctl/api/agent/contract"
	"github.com/vmctl/vmctl/guest-agent/internal/testenv"
)

func TestValidateMountPoint(t *testing.T) {
	tests := []struct {
		path  string
		valid bool
	}{
		{"/data", true},
		{"/var/lib/db", true},
		{"/with space", true},
		{"data", false},
		{"", false},
		{"/", false},
		{"/data/", false},
		{"/a//b", false},
		{"/a/./b", false},
		{"/..", false},
		{"/a/../../etc", false},
		{"/a/..", false},
		{"/a\x00b", false},
		{"/a\nb", false},
	}
	for _, tt := range tests {
		err := ValidateMountPoint(tt.path)
		if tt.valid != (err == nil) || (!tt.valid && !errors.Is(err, ErrInvalid)) {
			t.Errorf("ValidateMountPoint(%q) = %v, want valid %v", tt.path, err, tt.valid)
		}
	}
}

func TestValidateVolumes(t *testing.T) {
	img := Disk{Serial: "img", Role: contract.RoleImage}
	vol := Disk{Serial: "vol0", Role: contract.RoleVolume, MountPoint: "/data"}
	tests := []struct {
		name  string
		disks []Disk
		valid bool
	}{
		{"one volume", []Disk{img, vol}, true},
		{"read-only volume", []Disk{img, {Serial: "v", Role: contract.RoleVolume, MountPoint: "/d", ReadOnly: true}}, true},
		{"two volumes", []Disk{img, vol, {Serial: "vol1", Role: contract.RoleVolume, MountPoint: "/other"}}, true},
		{"same mount point twice", []Disk{img, vol, {Serial: "vol1", Role: contract.RoleVolume, MountPoint: "/data"}}, false},
		{"no mount point", []Disk{img, {Serial: "v", Role: contract.RoleVolume}}, false},
		{"escaping mount point", []Disk{img, {Serial: "v", Role: contract.RoleVolume, MountPoint: "/../etc"}}, false},
		{"relative mount point", []Disk{img, {Serial: "v", Role: contract.RoleVolume, MountPoint: "data"}}, false},
		{"mount point on an image", []Disk{{Serial: "img", Role: contract.RoleImage, MountPoint: "/x"}}, false},
		{"volumes only", []Disk{vol}, false},
	}
	for _, tt := range tests {
		err := Validate(tt.disks)
		if tt.valid != (err == nil) || (!tt.valid && !errors.Is(err, ErrInvalid)) {
			t.Errorf("%s: Validate = %v, want valid %v", tt.name, err, tt.valid)
		}
	}
}

// A volume's first use copies the image's content at its mount point in,
// without following the image's symlinks out of the rootfs; later uses
// keep what the volume holds.
func TestMountVolume(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts disks")
	}
	image := loopDisk(t, map[string]string{
		"data/seed":     "from the image\n",
		"data/sub/file": "nested\n",
		"etc/hostname":  "image\n",
	})
	// An image symlink that would leave the rootfs if it were followed
	// from the guest's root rather than resolved inside the rootfs.
	imgDir := t.TempDir()
	os.MkdirAll(filepath.Join(imgDir, "etc"), 0o755)
	os.WriteFile(filepath.Join(imgDir, "etc/hostname"), []byte("image\n"), 0o644)
	os.Symlink("/../../../etc", filepath.Join(imgDir, "link"))
	linkImage := testenv.Loop(t, testenv.Ext4Image(t, imgDir, "8M"))
	writable := loopDisk(t, nil)
	vol := loopDisk(t, nil)
	vol2 := loopDisk(t, nil)
	sys := testenv.FakeSysBlock(t, map[string]string{
		filepath.Base(image): "img", filepath.Base(linkImage): "img2", filepath.Base(writable): "rw",
		filepath.Base(vol): "vol0", filepath.Base(vol2): "vol1",
	})
	m := &Manager{SysBlock: sys, DevDir: "/dev", BaseDir: t.TempDir()}
	disks := []Disk{
		{Serial: "img", Role: contract.RoleImage},
		{Serial: "rw", Role: contract.RoleWritable},
		{Serial: "vol0", Role: contract.RoleVolume, MountPoint: "/data"},
		{Serial: "vol1", Role: contract.RoleVolume, MountPoint: "/empty", ReadOnly: true},
	}
	if _, err := m.Mount("c1", disks); err != nil {
		t.Fatalf("Mount: %v", err)
	}
	binds := m.Binds("c1", disks)
	if len(binds) != 2 || binds[0].Destination != "/data" || binds[1].Destination != "/empty" ||
		len(binds[1].Options) != 2 || binds[1].Options[1] != "ro" {
		t.Fatalf("Binds = %+v", binds)
	}
	data := binds[0].Source
	if b, err := os.ReadFile(filepath.Join(data, "sub/file")); err != nil || string(b) != "nested\n" {
		t.Errorf("copied-in image content = %q, %v", b, err)
	}
	if entries, err := os.ReadDir(binds[1].Source); err != nil || len(entries) != 0 {
		t.Errorf("volume on a path the image lacks = %v, %v; want an empty directory", entries, err)
	}
	if err := os.WriteFile(filepath.Join(data, "seed"), []byte("changed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := m.Unmount("c1"); err != nil {
		t.Fatalf("Unmount: %v", err)
	}
	if _, err := os.Stat(m.Dir("c1")); !os.IsNotExist(err) {
		t.Errorf("container dir left behind: %v", err)
	}

	// Second use: the volume's content wins over the image's.
	if _, err := m.Mount("c1", disks); err != nil {
		t.Fatalf("second Mount: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(m.Binds("c1", disks)[0].Source, "seed")); string(b) != "changed\n" {
		t.Errorf("after remount the volume holds %q, want the change", b)
	}
	if err := m.Unmount("c1"); err != nil {
		t.Fatalf("second Unmount: %v", err)
	}

	// A fresh volume on /link/.. resolves the link inside the rootfs: it
	// gets the image's /etc, never the guest's.
	vol3 := loopDisk(t, nil)
	sys2 := testenv.FakeSysBlock(t, map[string]string{filepath.Base(linkImage): "img2", filepath.Base(vol3): "vol2"})
	m2 := &Manager{SysBlock: sys2, DevDir: "/dev", BaseDir: t.TempDir()}
	disks2 := []Disk{{Serial: "img2", Role: contract.RoleImage}, {Serial: "vol2", Role: contract.RoleVolume, MountPoint: "/link"}}
	if _, err := m2.Mount("c2", disks2); err != nil {
		t.Fatalf("Mount with a symlinked mount point: %v", err)
	}
	defer m2.Unmount("c2")
	if b, err := os.ReadFile(filepath.Join(m2.Binds("c2", disks2)[0].Source, "hostname")); err != nil || string(b) != "image\n" {
		t.Errorf("volume under a symlink got hostname %q, %v; want the image's", b, err)
	}
}

// Binds mounts a parent before the volumes nested in it, whatever the
// order of the disks, as docker does: a later bind on a parent would
// hide the nested volume.
func TestBindsParentsFirst(t *testing.T) {
	m := &Manager{BaseDir: "/run/test"}
	disks := []Disk{
		{Serial: "img", Role: contract.RoleImage},
		{Serial: "v0", Role: contract.RoleVolume, MountPoint: "/var/lib/db/logs"},
		{Serial: "v1", Role: contract.RoleVolume, MountPoint: "/var/lib/db", ReadOnly: true},
		{Serial: "v2", Role: contract.RoleVolume, MountPoint: "/data"},
		{Serial: "v3", Role: contract.RoleVolume, MountPoint: "/var"},
	}
	var got []string
	for _, b := range m.Binds("c1", disks) {
		got = append(got, b.Destination+" "+filepath.Base(filepath.Dir(b.Source)))
	}
	want := []string{"/data volume-v2", "/var volume-v3", "/var/lib/db volume-v1", "/var/lib/db/logs volume-v0"}
	if !slices.Equal(got, want) {
		t.Errorf("Binds order = %q, want %q", got, want)
	}
}
