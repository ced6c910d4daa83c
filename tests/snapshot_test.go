package tests

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// snapshotProbe prints what two guests restored from one saved state must
// not share, and what must be the run's own: boot ID, random bytes, the
// clock (seconds), the disks (serial, size in 512-byte sectors, read-only)
// and the NIC's address.
const snapshotProbe = `cat /proc/sys/kernel/random/boot_id
head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n'; echo
date +%s
for d in /sys/block/vd*; do echo "$(cat $d/serial):$(cat $d/size):$(cat $d/ro)"; done | sort | tr '\n' ' '; echo
cat /sys/class/net/eth0/address 2>/dev/null || echo none`

type probe struct {
	bootID, random string
	clock          int64
	disks, mac     string
}

func runProbe(t *testing.T, e *env, args ...string) probe {
	t.Helper()
	before := time.Now().Unix()
	r := e.mustRun(t, 0, append(append([]string{"run", "--rm"}, args...), "busybox", "sh", "-c", snapshotProbe)...)
	after := time.Now().Unix()
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	if len(lines) != 5 {
		t.Fatalf("probe printed %q", r.stdout)
	}
	clock, err := strconv.ParseInt(lines[2], 10, 64)
	if err != nil {
		t.Fatalf("date: %q", lines[2])
	}
	// The guest's clock is the host's: within a second of the run.
	if clock < before-1 || clock > after+1 {
		t.Errorf("guest clock %d, host %d..%d", clock, before, after)
	}
	return probe{bootID: lines[0], random: lines[1], clock: clock, disks: strings.TrimSpace(lines[3]), mac: lines[4]}
}

// TestSnapshotRestoredGuests: runs start from the saved guest (the first
// saves it), and each restored guest has its own entropy, clock, disks and
// NIC: two runs from one state differ in boot ID and random bytes, see
// their own disks (a named volume's data and size, not the template's
// placeholders) and their own MAC. --cold-boot and a shape of its own boot
// without saving anything.
func TestSnapshotRestoredGuests(t *testing.T) {
	e := e2e(t)
	snaps := filepath.Join(e.dataRoot, "snapshots")
	shape := filepath.Join(snaps, "qemu-1cpu-256m-2disk-1nic")

	a := runProbe(t, e)
	if _, err := os.Stat(filepath.Join(shape, "state")); err != nil {
		t.Fatalf("no saved state after a run: %v", err)
	}
	st, _ := os.Stat(filepath.Join(shape, "meta.json"))
	b := runProbe(t, e)
	if st2, _ := os.Stat(filepath.Join(shape, "meta.json")); st2 == nil || !st2.ModTime().Equal(st.ModTime()) {
		t.Error("the second run saved the state again")
	}
	if a.bootID == b.bootID || a.random == b.random {
		t.Errorf("two restored guests share their boot ID or random bytes: %+v %+v", a, b)
	}
	if a.mac == b.mac || a.mac == "02:76:6d:74:00:00" || b.mac == "02:76:6d:74:00:00" {
		t.Errorf("NIC addresses %s and %s: want each run's own", a.mac, b.mac)
	}
	// Writable layer (the image's disks are read-only): the guest sees
	// the sizes of this run's disks, never the placeholders' 2048 sectors.
	for _, p := range []probe{a, b} {
		if !strings.Contains(p.disks, ":1 ") && !strings.HasSuffix(p.disks, ":1") || strings.Contains(p.disks, ":2048:") {
			t.Errorf("disks %q: want a read-only image disk and no 1 MiB placeholder", p.disks)
		}
	}

	// A named volume (a third disk: another shape, saved on first use):
	// the second run reads what the first wrote.
	vol := "snapvol" + strconv.Itoa(os.Getpid())
	e.mustRun(t, 0, "volume", "create", vol)
	t.Cleanup(func() { e.run(t, "volume", "rm", "-f", vol) })
	e.mustRun(t, 0, "run", "--rm", "-v", vol+":/data", "busybox", "sh", "-c", "echo own-disk > /data/f")
	if r := e.mustRun(t, 0, "run", "--rm", "-v", vol+":/data", "busybox", "cat", "/data/f"); strings.TrimSpace(r.stdout) != "own-disk" {
		t.Errorf("volume read back %q from a restored guest", r.stdout)
	}
	if _, err := os.Stat(filepath.Join(snaps, "qemu-1cpu-256m-3disk-1nic", "state")); err != nil {
		t.Errorf("no saved state for the 3-disk shape: %v", err)
	}

	// --cold-boot, and the label docker users give: nothing saved for a
	// shape only they used.
	// -m 320m: a VM of 448 MiB, a shape no other run here has.
	runProbe(t, e, "--cold-boot", "-m", "320m")
	e.mustRun(t, 0, "run", "--rm", "--label", "io.vmctl.cold-boot=true", "-m", "320m", "busybox", "true")
	if _, err := os.Stat(filepath.Join(snaps, "qemu-1cpu-448m-2disk-1nic")); err == nil {
		t.Error("a cold-boot run saved a state")
	}

	r := e.mustRun(t, 0, "info")
	if !strings.Contains(r.stdout, "Snapshots:") || !strings.Contains(r.stdout, "on, in "+snaps) ||
		!strings.Contains(r.stdout, "qemu-1cpu-256m-2disk-1nic") {
		t.Errorf("vmctl info does not say where the saved states are:\n%s", r.stdout)
	}
	if r := e.mustRun(t, 0, "--snapshots=false", "info"); !strings.Contains(r.stdout, "Snapshots:      off") {
		t.Errorf("vmctl --snapshots=false info:\n%s", r.stdout)
	}
}

// TestSnapshotsOffInDaemon: vmctld --snapshots=false boots every VM and
// saves nothing; docker info says so.
func TestSnapshotsOffInDaemon(t *testing.T) {
	d := startDaemon(t, "--snapshots=false")
	d.mustDocker(t, 0, "", "run", "--rm", "busybox", "true")
	if _, err := os.Stat(filepath.Join(d.dataRoot, "snapshots")); err == nil {
		t.Error("vmctld --snapshots=false saved a VM state")
	}
	if r := d.mustDocker(t, 0, "", "info"); !strings.Contains(r.stdout, "Snapshots: off") {
		t.Errorf("docker info does not say snapshots are off:\n%s", r.stdout)
	}
}

// TestSnapshotsFollowEnvironment: VMCTL_SNAPSHOTS=false (which `make test`
// sets for its second pass over the core run tests) turns saved guests off
// in the in-process engine and in vmctld: a run then saves nothing.
func TestSnapshotsFollowEnvironment(t *testing.T) {
	e := e2e(t)
	e.mustRun(t, 0, "run", "--rm", "-m", "272m", "busybox", "true")
	_, err := os.Stat(filepath.Join(e.dataRoot, "snapshots", "qemu-1cpu-400m-2disk-1nic", "state"))
	off := os.Getenv("VMCTL_SNAPSHOTS") == "false"
	if off && err == nil {
		t.Error("VMCTL_SNAPSHOTS=false, yet a run saved its guest")
	}
	if !off && err != nil {
		t.Errorf("snapshots on, yet the run saved no guest: %v", err)
	}
	d := startDaemon(t)
	d.mustDocker(t, 0, "", "run", "--rm", "busybox", "true")
	_, err = os.Stat(filepath.Join(d.dataRoot, "snapshots"))
	if off != (err != nil) {
		t.Errorf("vmctld with VMCTL_SNAPSHOTS=%q: snapshots directory: %v", os.Getenv("VMCTL_SNAPSHOTS"), err)
	}
}
