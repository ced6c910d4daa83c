package hostcheck

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// fakeCPU is a CPU for fake CPUID: its vendor, and the hypervisor it
// runs under (leaf 1's bit and leaf 0x40000000's signature).
type fakeCPU struct {
	vendor     string
	hypervisor bool
	signature  string
	// leaf0x100 is leaf 0x40000100's signature (KVM under Hyper-V
	// enlightenments).
	leaf0x100 string
}

// regs spells s (up to 12 bytes) as three registers, NUL-padded.
func regs(s string) (a, b, c uint32) {
	buf := make([]byte, 12)
	copy(buf, s)
	return binary.LittleEndian.Uint32(buf), binary.LittleEndian.Uint32(buf[4:]), binary.LittleEndian.Uint32(buf[8:])
}

func (f fakeCPU) cpuid(leaf, _ uint32) (eax, ebx, ecx, edx uint32) {
	switch leaf {
	case 0:
		b, d, c := regs(f.vendor) // EBX, EDX, ECX
		return 0xd, b, c, d
	case 1:
		if f.hypervisor {
			return 0, 0, 1 << 31, 0
		}
		return 0, 0, 0, 0
	case 0x4000_0000:
		b, c, d := regs(f.signature)
		return 0x4000_0001, b, c, d
	case 0x4000_0100:
		b, c, d := regs(f.leaf0x100)
		return 0, b, c, d
	}
	return 0, 0, 0, 0
}

// fakeMachine is a host for a check: DMI strings, a CPU, its flags and
// KVM's state.
type fakeMachine struct {
	dmi    map[string]string // file name -> content
	cpu    fakeCPU
	flags  string // /proc/cpuinfo's flags
	devKVM bool
	pvm    bool
}

func (m fakeMachine) env(t *testing.T) Env {
	t.Helper()
	dir := t.TempDir()
	write := func(path, body string) {
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dmiDir := filepath.Join(dir, "dmi")
	if m.dmi != nil {
		if err := os.Mkdir(dmiDir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, body := range m.dmi {
			write(filepath.Join(dmiDir, name), body+"\n")
		}
	}
	e := Env{DMIDir: dmiDir, CPUID: m.cpu.cpuid}
	e.KVM.DevKVM = filepath.Join(dir, "kvm")
	e.KVM.CPUInfo = filepath.Join(dir, "cpuinfo")
	e.KVM.PVMModule = filepath.Join(dir, "kvm_pvm")
	write(e.KVM.CPUInfo, "processor\t: 0\nvendor_id\t: "+m.cpu.vendor+"\nflags\t\t: "+m.flags+"\n\n")
	if m.devKVM {
		write(e.KVM.DevKVM, "")
	}
	if m.pvm {
		if err := os.Mkdir(e.KVM.PVMModule, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

var (
	intel     = fakeCPU{vendor: "GenuineIntel"}
	amd       = fakeCPU{vendor: "AuthenticAMD"}
	vboxDMI   = map[string]string{"sys_vendor": "innotek GmbH", "product_name": "VirtualBox", "bios_vendor": "innotek GmbH", "board_vendor": "Oracle Corporation"}
	vmwareDMI = map[string]string{"sys_vendor": "VMware, Inc.", "product_name": "VMware Virtual Platform", "bios_vendor": "Phoenix Technologies LTD", "board_vendor": "Intel Corporation"}
	hypervDMI = map[string]string{"sys_vendor": "Microsoft Corporation", "product_name": "Virtual Machine", "bios_vendor": "Microsoft Corporation", "board_vendor": "Microsoft Corporation"}
	qemuDMI   = map[string]string{"sys_vendor": "QEMU", "product_name": "Standard PC (Q35 + ICH9, 2009)", "bios_vendor": "SeaBIOS"}
	dellDMI   = map[string]string{"sys_vendor": "Dell Inc.", "product_name": "PowerEdge R640", "bios_vendor": "Dell Inc.", "board_vendor": "Dell Inc."}
)

func under(cpu fakeCPU, signature string) fakeCPU {
	cpu.hypervisor, cpu.signature = true, signature
	return cpu
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name     string
		m        fakeMachine
		outer    Kind
		evidence string
		driver   string
		virt     string
		kvm      string
		advice   []string // each in the advice, in order; none: no advice
	}{
		{
			name: "VirtualBox without nested VT-x", outer: VirtualBox,
			m:        fakeMachine{dmi: vboxDMI, cpu: under(intel, "KVMKVMKVM")}, // its KVM paravirtualization interface
			evidence: `CPUID signature "KVMKVMKVM"; DMI innotek GmbH VirtualBox`,
			driver:   "qemu", virt: "not available: VirtualBox does not pass VT-x/AMD-V on", kvm: "does not exist",
			advice: []string{"powered off", `VBoxManage modifyvm "<VM>" --nested-hw-virt on`, "Settings > System > Processor > Enable Nested VT-x/AMD-V"},
		},
		{
			name: "VirtualBox with nested VT-x", outer: VirtualBox,
			m:      fakeMachine{dmi: vboxDMI, cpu: under(intel, "VBoxVBoxVBox"), flags: "fpu vmx hypervisor", devKVM: true},
			driver: "kvm", virt: "nested virtualization available (Intel VT-x, the vmx flag)", kvm: "runs full guests",
		},
		{
			name: "VirtualBox, nested AMD-V, kvm_amd not loaded", outer: VirtualBox,
			m:      fakeMachine{dmi: vboxDMI, cpu: under(amd, "KVMKVMKVM"), flags: "fpu svm hypervisor"},
			driver: "qemu", virt: "nested virtualization available (AMD-V, the svm flag)", kvm: "does not exist",
			advice: []string{"the CPU has svm: load KVM with modprobe kvm_amd"},
		},
		{
			name: "VMware without nested", outer: VMware,
			m:        fakeMachine{dmi: vmwareDMI, cpu: under(intel, "VMwareVMware"), flags: "fpu hypervisor", devKVM: true},
			evidence: `CPUID signature "VMwareVMware"; DMI VMware, Inc. VMware Virtual Platform`,
			driver:   "qemu", virt: "not available: VMware does not pass", kvm: "no vmx/svm flag",
			advice: []string{`"Virtualize Intel VT-x/EPT or AMD-V/RVI"`, `vhv.enable = "TRUE"`},
		},
		{
			name: "VMware with nested", outer: VMware,
			m:      fakeMachine{dmi: vmwareDMI, cpu: under(intel, "VMwareVMware"), flags: "fpu vmx hypervisor", devKVM: true},
			driver: "kvm", virt: "nested virtualization available (Intel VT-x", kvm: "runs full guests",
		},
		{
			name: "Hyper-V without nested", outer: HyperV,
			m:        fakeMachine{dmi: hypervDMI, cpu: under(amd, "Microsoft Hv"), flags: "fpu hypervisor"},
			evidence: `CPUID signature "Microsoft Hv"; DMI Microsoft Corporation Virtual Machine`,
			driver:   "qemu", virt: "not available: Hyper-V does not pass", kvm: "does not exist",
			advice: []string{"VM off", `Set-VMProcessor -VMName "<VM>" -ExposeVirtualizationExtensions $true`},
		},
		{
			name: "Hyper-V with nested", outer: HyperV,
			m:      fakeMachine{dmi: hypervDMI, cpu: under(intel, "Microsoft Hv"), flags: "vmx hypervisor", devKVM: true},
			driver: "kvm", virt: "nested virtualization available", kvm: "runs full guests",
		},
		{
			name: "KVM without nested", outer: KVM,
			m:        fakeMachine{dmi: qemuDMI, cpu: under(amd, "KVMKVMKVM"), flags: "fpu hypervisor", devKVM: true},
			evidence: `CPUID signature "KVMKVMKVM"; DMI QEMU Standard PC (Q35 + ICH9, 2009)`,
			driver:   "qemu", virt: "not available: KVM does not pass", kvm: "no vmx/svm flag",
			advice: []string{"kvm_amd nested=1", "options kvm_amd nested=1", "-cpu host", "host-passthrough"},
		},
		{
			name: "KVM with nested", outer: KVM,
			m:      fakeMachine{dmi: qemuDMI, cpu: under(intel, "KVMKVMKVM"), flags: "vmx hypervisor", devKVM: true},
			driver: "kvm", virt: "nested virtualization available", kvm: "runs full guests",
		},
		{
			name: "KVM with Hyper-V enlightenments", outer: KVM,
			m:      fakeMachine{cpu: fakeCPU{vendor: "GenuineIntel", hypervisor: true, signature: "Microsoft Hv", leaf0x100: "KVMKVMKVM"}},
			driver: "qemu", virt: "not available: KVM does not pass", kvm: "does not exist",
			advice: []string{"kvm_intel nested=1", "-cpu host", "microVM without DMI tables"},
		},
		{
			name: "bare metal without VT-x", outer: BareMetal,
			m:        fakeMachine{dmi: dellDMI, cpu: intel, flags: "fpu sse2"},
			evidence: "no CPUID hypervisor bit; DMI Dell Inc. PowerEdge R640",
			driver:   "qemu", virt: "not available: the CPU shows no vmx/svm flag", kvm: "does not exist",
			advice: []string{"enable Intel Virtualization Technology (VT-x) in the firmware (BIOS/UEFI) setup"},
		},
		{
			name: "bare metal AMD without SVM", outer: BareMetal,
			m:      fakeMachine{dmi: dellDMI, cpu: amd, flags: "fpu"},
			driver: "qemu", virt: "not available", kvm: "does not exist",
			advice: []string{"enable SVM Mode (AMD-V) in the firmware"},
		},
		{
			name: "bare metal with VT-x", outer: BareMetal,
			m:      fakeMachine{dmi: dellDMI, cpu: intel, flags: "fpu vmx", devKVM: true},
			driver: "kvm", virt: "available (Intel VT-x, the vmx flag)", kvm: "runs full guests",
		},
		{
			name: "QEMU with TCG", outer: QEMUTCG,
			m:        fakeMachine{dmi: qemuDMI, cpu: under(amd, "TCGTCGTCGTCG"), flags: "fpu hypervisor"},
			evidence: `CPUID signature "TCGTCGTCGTCG"`,
			driver:   "qemu", virt: "not available", kvm: "does not exist",
			advice: []string{"-accel kvm -cpu host", "-cpu max"},
		},
		{
			name: "PVM, no /dev/kvm, under bhyve", outer: Bhyve,
			m:        fakeMachine{cpu: under(amd, "bhyve bhyve "), flags: "fpu hypervisor", pvm: true},
			evidence: `CPUID signature "bhyve bhyve "; no DMI table`,
			driver:   "qemu", virt: "not available: bhyve does not pass", kvm: "does not exist: KVM is not enabled on this host, so it cannot run full guests; kvm_pvm (the PVM flavour of KVM) is loaded",
			advice: []string{"bhyve offers its guests no nested virtualization"},
		},
		{
			name: "PVM /dev/kvm under KVM", outer: KVM,
			m:      fakeMachine{cpu: under(intel, "KVMKVMKVM"), flags: "fpu hypervisor", devKVM: true, pvm: true},
			driver: "qemu", virt: "not available", kvm: "PVM-flavoured KVM (kvm_pvm loaded, no vmx/svm CPU flag): it cannot run full guests; kvm_pvm",
			advice: []string{"kvm_intel nested=1", "Firecracker"},
		},
		{
			name: "PVM holds KVM on a CPU with vmx", outer: KVM,
			m:      fakeMachine{dmi: qemuDMI, cpu: under(intel, "KVMKVMKVM"), flags: "vmx hypervisor", devKVM: true, pvm: true},
			driver: "qemu", virt: "nested virtualization available", kvm: "PVM-flavoured KVM (kvm_pvm loaded)",
			advice: []string{"rmmod kvm_pvm && modprobe kvm_intel"},
		},
		{
			name: "Xen without nested", outer: Xen,
			m:      fakeMachine{dmi: map[string]string{"sys_vendor": "Xen", "product_name": "HVM domU"}, cpu: under(intel, "XenVMMXenVMM")},
			driver: "qemu", virt: "not available", kvm: "does not exist",
			advice: []string{"nestedhvm=1"},
		},
		{
			name: "unknown hypervisor", outer: Unknown,
			m:        fakeMachine{cpu: under(intel, "ACRNACRNACRN")},
			evidence: `CPUID signature "ACRNACRNACRN"; no DMI table`,
			driver:   "qemu", virt: "not available: an unknown hypervisor does not pass", kvm: "does not exist",
			advice: []string{"expose VT-x/AMD-V (nested virtualization) to this VM in the outer hypervisor's settings"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := tt.m.env(t).Check()
			if err != nil {
				t.Fatal(err)
			}
			if r.Outer.Kind != tt.outer || !strings.Contains(r.Outer.String(), tt.evidence) {
				t.Errorf("Outer = %q (%s), want %s containing %q", r.Outer.Kind, r.Outer, tt.outer, tt.evidence)
			}
			if r.Choice.Driver != tt.driver {
				t.Errorf("Choice = %+v, want driver %s", r.Choice, tt.driver)
			}
			if r.KVMOK != (tt.driver == "kvm") || !strings.Contains(r.KVM, tt.kvm) {
				t.Errorf("KVM = %v, %q; want %v, containing %q", r.KVMOK, r.KVM, tt.driver == "kvm", tt.kvm)
			}
			if !strings.HasPrefix(r.Virtualization, tt.virt) && !strings.Contains(r.Virtualization, tt.virt) {
				t.Errorf("Virtualization = %q, want it to say %q", r.Virtualization, tt.virt)
			}
			if len(tt.advice) == 0 && r.Advice != "" {
				t.Errorf("Advice = %q, want none", r.Advice)
			}
			rest := r.Advice
			for _, want := range tt.advice {
				i := strings.Index(rest, want)
				if i < 0 {
					t.Errorf("Advice = %q, want %q (in this order: %q)", r.Advice, want, tt.advice)
					break
				}
				rest = rest[i+len(want):]
			}
			for _, s := range []string{r.Outer.String(), r.Virtualization, r.KVM, r.Advice} {
				if strings.Contains(s, "\n") {
					t.Errorf("%q is more than one line", s)
				}
			}
		})
	}
}

func TestCheckUnreadableCPUFlags(t *testing.T) {
	e := fakeMachine{dmi: vboxDMI, cpu: under(intel, "VBoxVBoxVBox"), devKVM: true}.env(t)
	e.KVM.CPUInfo = filepath.Join(t.TempDir(), "missing")
	r, err := e.Check()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(r.Virtualization, "unknown: cannot read CPU flags") || r.Advice != "" || r.Choice.Driver != "qemu" {
		t.Errorf("Check() = %+v; want virtualization unknown, no advice, qemu", r)
	}
}

func TestCheckWithoutCPUID(t *testing.T) {
	e := fakeMachine{dmi: vmwareDMI}.env(t)
	e.CPUID = nil
	r, err := e.Check()
	if err != nil {
		t.Fatal(err)
	}
	if r.Outer.Kind != VMware || !strings.Contains(r.Outer.Evidence, "no CPUID") {
		t.Errorf("Outer = %+v, want VMware by DMI, no CPUID", r.Outer)
	}
	e = fakeMachine{}.env(t)
	e.CPUID = nil
	if r, _ := e.Check(); r.Outer.Kind != BareMetal {
		t.Errorf("no CPUID, no DMI: Outer = %+v, want %s", r.Outer, BareMetal)
	}
}

func TestParseAccelerators(t *testing.T) {
	tests := []struct {
		help string
		want []string
	}{
		{"Accelerators supported in QEMU binary:\ntcg\nkvm\n", []string{"kvm", "tcg"}},
		{"Accelerators supported in QEMU binary:\ntcg\n", []string{"tcg"}},
		{"Accelerators supported in QEMU binary:\n  tcg \nkvm\ntcg\n\n", []string{"kvm", "tcg"}},
		{"", nil},
	}
	for _, tt := range tests {
		if got := parseAccelerators(tt.help); !slices.Equal(got, tt.want) {
			t.Errorf("parseAccelerators(%q) = %q, want %q", tt.help, got, tt.want)
		}
	}
}

func TestQEMUAccelerators(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "qemu-system-x86_64")
	script := "#!/bin/sh\n[ \"$1 $2\" = '-accel help' ] || exit 1\nprintf 'Accelerators supported in QEMU binary:\\ntcg\\nkvm\\n'\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	got, err := QEMUAccelerators(context.Background(), fake)
	if err != nil || !slices.Equal(got, []string{"kvm", "tcg"}) {
		t.Errorf("QEMUAccelerators(fake) = %q, %v; want [kvm tcg]", got, err)
	}
	if _, err := QEMUAccelerators(context.Background(), filepath.Join(dir, "missing")); err == nil {
		t.Error("QEMUAccelerators(missing binary) = nil error")
	}
}

// On this machine, CPUID's answers are consistent: the hypervisor bit is
// what /proc/cpuinfo's "hypervisor" flag shows.
func TestNativeCPUID(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("CPUID is x86's")
	}
	id := readCPUID(nativeCPUID)
	if id.vendor == "" {
		t.Errorf("CPUID leaf 0 gave no vendor")
	}
	cpuinfo, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		t.Skip("no /proc/cpuinfo")
	}
	flagged := slices.Contains(strings.Fields(flagsLine(string(cpuinfo))), "hypervisor")
	if id.hypervisor != flagged {
		t.Errorf("CPUID hypervisor bit %v, /proc/cpuinfo hypervisor flag %v", id.hypervisor, flagged)
	}
	if !strings.Contains(string(cpuinfo), id.vendor) {
		t.Errorf("CPUID vendor %q is not /proc/cpuinfo's", id.vendor)
	}
}

func flagsLine(cpuinfo string) string {
	for _, line := range strings.Split(cpuinfo, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "flags" {
			return v
		}
	}
	return ""
}
