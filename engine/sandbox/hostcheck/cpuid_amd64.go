package hostcheck

// cpuid executes the CPUID instruction (cpuid_amd64.s). golang.org/x/sys/cpu
// keeps its own unexported; no dependency of the module exposes the
// hypervisor leaves, and eight instructions are less than a new module.
func cpuid(leaf, subleaf uint32) (eax, ebx, ecx, edx uint32)

// nativeCPUID is this CPU's CPUID.
var nativeCPUID = cpuid
