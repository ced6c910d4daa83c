package restored

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
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

// TestRebind checks that every device of each driver is unbound and then
// bound again (devices at once, each in that order), and that a failure is
// reported with its device.
func TestRebind(t *testing.T) {
	sys := t.TempDir()
	for drv, devs := range map[string][]string{"virtio_blk": {"virtio3", "virtio1"}, "virtio_net": {"virtio2"}} {
		dir := filepath.Join(sys, "bus", "virtio", "drivers", drv)
		os.MkdirAll(dir, 0o755)
		for _, d := range devs {
			os.WriteFile(filepath.Join(dir, d), nil, 0o644)
		}
	}
	var mu sync.Mutex
	writes := map[string][]string{} // device -> attributes written, in order
	record := func(path string, data []byte) error {
		mu.Lock()
		defer mu.Unlock()
		drv := filepath.Base(filepath.Dir(path))
		writes[drv+"/"+string(data)] = append(writes[drv+"/"+string(data)], filepath.Base(path))
		return nil
	}
	if err := (Env{SysDir: sys, write: record}).rebind("virtio_blk", "virtio_net"); err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"virtio_blk/virtio1": {"unbind", "bind"}, "virtio_blk/virtio3": {"unbind", "bind"}, "virtio_net/virtio2": {"unbind", "bind"},
	}
	if fmt.Sprint(writes) != fmt.Sprint(want) {
		t.Errorf("writes = %v, want %v", writes, want)
	}
	refuse := func(path string, data []byte) error {
		if filepath.Base(path) == "bind" && string(data) == "virtio3" {
			return errors.New("no such device")
		}
		return nil
	}
	err := (Env{SysDir: sys, write: refuse}).rebind("virtio_blk", "virtio_net")
	if err == nil || !strings.Contains(err.Error(), "virtio_blk virtio3: bind: no such device") {
		t.Errorf("rebind with a refused bind = %v, want the device's error", err)
	}
	// No devices: nothing to do.
	if err := (Env{SysDir: "/proc"}).rebind("virtio_blk"); err != nil {
		t.Errorf("no devices: %v", err)
	}
}
