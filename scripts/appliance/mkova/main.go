// mkova packs the appliance's streamOptimized VMDK into an OVA that
// VirtualBox and VMware Workstation import (see internal/ova), and checks
// the result as the tests do.
//
//	go run ./scripts/appliance/mkova -disk build/appliance/vmctl-disk1.vmdk -o build/appliance/vmctl.ova
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/vmctl/vmctl/internal/ova"
)

func main() {
	disk := flag.String("disk", "", "streamOptimized VMDK to pack (required)")
	out := flag.String("o", "", "OVA to write (required)")
	name := flag.String("name", "vmctl", "the VM's name on import")
	cpus := flag.Int("cpus", 2, "virtual CPUs")
	mem := flag.Int("memory", 4096, "memory in MiB")
	version := flag.String("version", "", "vmctl's version (default: git describe)")
	flag.Parse()
	if *disk == "" || *out == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: mkova -disk DISK.vmdk -o OUT.ova [-name N -cpus N -memory MiB]")
		os.Exit(2)
	}
	if *version == "" {
		v, err := exec.Command("git", "describe", "--always", "--dirty").Output()
		*version = strings.TrimSpace(string(v))
		if err != nil || *version == "" {
			*version = "dev"
		}
	}
	m := ova.Machine{
		Name:        *name,
		Description: "vmctl: containers, each in its own lightweight VM (Debian 12)",
		Version:     *version,
		CPUs:        *cpus,
		MemoryMiB:   *mem,
		Disk:        *disk,
	}
	if err := ova.Write(*out, m); err != nil {
		fmt.Fprintln(os.Stderr, "mkova:", err)
		os.Exit(1)
	}
	if _, err := ova.Verify(*out, filepath.Join(ova.SchemaDir, "ovf-envelope.xsd")); err != nil {
		os.Remove(*out)
		fmt.Fprintln(os.Stderr, "mkova:", err)
		os.Exit(1)
	}
}
