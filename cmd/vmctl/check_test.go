package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/system"
)

func TestWriteCheck(t *testing.T) {
	outer := [][2]string{{"Outer hypervisor", "VirtualBox (DMI innotek GmbH VirtualBox)"}, {"Virtualization", "not available"}}
	tests := []struct {
		name     string
		info     system.Info
		want     []string // lines, in order
		wantFail string   // the one line of a host where nothing runs
	}{
		{
			name: "emulation with advice",
			info: system.Info{DriverStatus: append([][2]string{{"Hypervisor", "qemu"}, {"Acceleration", "tcg"}, {"Reason", "qemu with TCG"}},
				append(outer, [2]string{"KVM", "/dev/kvm does not exist"}, [2]string{"QEMU", "/usr/bin/qemu-system-x86_64 (accelerators kvm, tcg; usable here: tcg)"},
					[2]string{"Fast path", `VBoxManage modifyvm "<VM>" --nested-hw-virt on`}, [2]string{"Guest kernel", "/k"})...)},
			want: []string{
				"Outer hypervisor:  VirtualBox (DMI innotek GmbH VirtualBox)",
				"VT-x/AMD-V:        not available",
				"/dev/kvm:          /dev/kvm does not exist",
				"QEMU:              /usr/bin/qemu-system-x86_64 (accelerators kvm, tcg; usable here: tcg)",
				"auto picks:        qemu (accelerator tcg)",
				"Why:               qemu with TCG",
				`Fast path:         VBoxManage modifyvm "<VM>" --nested-hw-virt on`,
				"Result:            containers can run here, on qemu with tcg",
			},
		},
		{
			name: "native VMM",
			info: system.Info{DriverStatus: [][2]string{{"Hypervisor", "kvm"}, {"Acceleration", "kvm"}, {"Reason", "the native VMM"},
				{"Outer hypervisor", "none (bare metal)"}, {"Virtualization", "available"}, {"KVM", "runs full guests"}}},
			want: []string{"Outer hypervisor:  none (bare metal)", "VT-x/AMD-V:        available", "/dev/kvm:          runs full guests",
				"auto picks:        kvm (accelerator kvm)", "Why:               the native VMM",
				"Fast path:         in use: the native VMM runs on hardware virtualization", "Result:            containers can run here, on kvm with kvm"},
		},
		{
			name: "nothing runs",
			info: system.Info{DriverStatus: append(outer, [2]string{"KVM", "/dev/kvm does not exist"}, [2]string{"QEMU", "qemu-system-x86_64 not found"}),
				Warnings: []string{"the forward policy drops", "no hypervisor: the native VMM cannot run (x), nor can QEMU (y)"}},
			want:     []string{"Outer hypervisor:  VirtualBox", "VT-x/AMD-V:        not available", "/dev/kvm:          /dev/kvm does not exist", "QEMU:              qemu-system-x86_64 not found"},
			wantFail: "no hypervisor can run containers here: the native VMM cannot run (x), nor can QEMU (y)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out strings.Builder
			err := writeCheck(&out, tt.info)
			got := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
			if len(got) != len(tt.want) {
				t.Fatalf("writeCheck wrote %d lines, want %d:\n%s", len(got), len(tt.want), out.String())
			}
			for i, want := range tt.want {
				if !strings.HasPrefix(got[i], want) {
					t.Errorf("line %d = %q, want it to start %q", i, got[i], want)
				}
			}
			var se *statusError
			switch {
			case tt.wantFail == "" && err != nil:
				t.Errorf("writeCheck() = %v, want nil", err)
			case tt.wantFail != "" && (!errors.As(err, &se) || se.code != 1 || err.Error() != tt.wantFail):
				t.Errorf("writeCheck() = %v, want status 1 with %q", err, tt.wantFail)
			}
		})
	}
}
