package nested

import (
	"strings"
	"testing"
	"time"

	"github.com/vmctl/vmctl/internal/nested"
)

func init() {
	register(scenario{
		test:     "TestKVMSmoke",
		Scenario: nested.Scenario{Name: "kvm-smoke", Script: "kvmsmoke /dev/kvm", Timeout: 30 * time.Second},
		files: func(root, tmp string) ([]nested.File, error) {
			bin, err := buildStatic(root, tmp, "./tests/nested/testdata/kvmsmoke")
			return []nested.File{{Path: "nested/bin/kvmsmoke", Source: bin}}, err
		},
	})
}

// TestKVMSmoke runs a real-mode guest on L1's /dev/kvm: the chain QEMU TCG
// -> emulated SVM -> kvm-amd works, independently of vmctl-vmm.
func TestKVMSmoke(t *testing.T) {
	r := result(t, "kvm-smoke")
	if !strings.HasPrefix(r.Detail, "kvmsmoke: ok") {
		t.Errorf("detail %q, want kvmsmoke: ok ...", r.Detail)
	}
}
