//go:build !amd64

package hostcheck

// nativeCPUID is nil where there is no x86 CPUID: the outer hypervisor is
// then named by DMI alone.
var nativeCPUID func(leaf, subleaf uint32) (eax, ebx, ecx, edx uint32)
