// Command kvmsmoke runs kvmsmoke.Run on /dev/kvm (or the device given as
// the only argument) and prints one line saying what the guest did. It exits
// 0 only when the guest behaved exactly as programmed. The nested harness
// copies it into L1; it lives under testdata so that `go build ./...` skips it.
package main

import (
	"fmt"
	"os"

	"github.com/vmctl/vmctl/internal/nested/kvmsmoke"
)

func main() {
	dev := "/dev/kvm"
	if len(os.Args) > 1 {
		dev = os.Args[1]
	}
	res, err := kvmsmoke.Run(dev)
	if err != nil {
		fmt.Printf("kvmsmoke: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("kvmsmoke: ok: api=%d exits=%d sum=%#x stored=%#x serial=%q\n", res.APIVersion, res.Exits, res.Sum, res.Stored, res.Serial)
}
