package restored

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCheck(t *testing.T) {
	good := Request{Seed: make([]byte, 64), Now: time.Now(),
		MACs: map[string]net.HardwareAddr{"02:76:6d:74:00:00": {2, 0, 0, 0, 0, 1}}}
	if err := Check(good); err != nil {
		t.Fatalf("Check(good) = %v", err)
	}
	for name, r := range map[string]Request{
		"short seed":        {Seed: make([]byte, MinSeed-1), Now: time.Now()},
		"long seed":         {Seed: make([]byte, MaxSeed+1), Now: time.Now()},
		"no time":           {Seed: make([]byte, 64)},
		"bad template":      {Seed: make([]byte, 64), Now: time.Now(), MACs: map[string]net.HardwareAddr{"eth0": {2, 0, 0, 0, 0, 1}}},
		"multicast address": {Seed: make([]byte, 64), Now: time.Now(), MACs: map[string]net.HardwareAddr{"02:76:6d:74:00:00": {1, 0, 0, 0, 0, 1}}},
		"short address":     {Seed: make([]byte, 64), Now: time.Now(), MACs: map[string]net.HardwareAddr{"02:76:6d:74:00:00": {2, 0}}},
		"one address twice": {Seed: make([]byte, 64), Now: time.Now(), MACs: map[string]net.HardwareAddr{
			"02:76:6d:74:00:00": {2, 0, 0, 0, 0, 1}, "02:76:6d:74:00:01": {2, 0, 0, 0, 0, 1}}},
	} {
		if err := Check(r); err == nil {
			t.Errorf("Check(%s) accepted it", name)
		}
		// Apply checks first: nothing is touched.
		if err := (Env{SysDir: "/nonexistent", Random: "/nonexistent"}).Apply(r); err == nil || strings.Contains(err.Error(), "nonexistent") {
			t.Errorf("Apply(%s) = %v, want the check's error", name, err)
		}
	}
}

// TestRebind checks that every device of each driver is unbound and bound
// again, drivers in the order given and devices in order.
func TestRebind(t *testing.T) {
	sys := t.TempDir()
	var log []string
	for drv, devs := range map[string][]string{"virtio_blk": {"virtio3", "virtio1"}, "virtio_net": {"virtio2"}} {
		dir := filepath.Join(sys, "bus", "virtio", "drivers", drv)
		os.MkdirAll(dir, 0o755)
		for _, d := range devs {
			os.WriteFile(filepath.Join(dir, d), nil, 0o644)
		}
	}
	// Each write replaces the file's content: read them back after each
	// driver by wrapping rebind per driver.
	for _, drv := range []string{"virtio_blk", "virtio_net"} {
		dir := filepath.Join(sys, "bus", "virtio", "drivers", drv)
		if err := (Env{SysDir: sys}).rebind(drv); err != nil {
			t.Fatal(err)
		}
		u, _ := os.ReadFile(filepath.Join(dir, "unbind"))
		b, _ := os.ReadFile(filepath.Join(dir, "bind"))
		log = append(log, drv+":"+string(u)+","+string(b))
	}
	want := []string{"virtio_blk:virtio3,virtio3", "virtio_net:virtio2,virtio2"}
	if strings.Join(log, " ") != strings.Join(want, " ") {
		t.Errorf("last writes = %q, want %q (devices in order, each unbound then bound)", log, want)
	}
	// A driver that refuses is reported with the device.
	if err := (Env{SysDir: "/proc"}).rebind("virtio_blk"); err != nil {
		t.Errorf("no devices: %v", err)
	}
}
