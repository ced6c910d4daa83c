// Command mkguest builds the guest initramfs: an uncompressed newc cpio whose
// /init is the given static binary (normally the agent).
//
//	go run ./scripts/mkguest -init bin/vmctl-agent -o bin/guest/initramfs.img
//
// It does not build the agent or the kernel.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/vmctl/vmctl/internal/initramfs"
)

func main() {
	initPath := flag.String("init", "bin/vmctl-agent", "static binary to run as /init")
	out := flag.String("o", "bin/guest/initramfs.img", "output image")
	flag.Parse()
	if flag.NArg() != 0 {
		fmt.Fprintf(os.Stderr, "mkguest: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}
	if err := initramfs.WriteFile(*out, *initPath); err != nil {
		fmt.Fprintf(os.Stderr, "mkguest: %v\n", err)
		os.Exit(1)
	}
}
