package hostcheck

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"time"
)

// QEMUAccelerators returns the accelerators the QEMU binary bin was built
// with, as its -accel help lists them. Built with is not usable here: kvm
// needs a /dev/kvm that runs full guests (Report.KVMOK).
func QEMUAccelerators(ctx context.Context, bin string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "-accel", "help").Output()
	if err != nil {
		return nil, fmt.Errorf("%s -accel help: %w", bin, err)
	}
	return parseAccelerators(string(out)), nil
}

// parseAccelerators reads -accel help's answer: a heading, then one
// accelerator a line.
func parseAccelerators(help string) []string {
	var accels []string
	for _, line := range strings.Split(help, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.ContainsAny(line, " :") {
			continue // the heading, or anything that is no name
		}
		accels = append(accels, line)
	}
	slices.Sort(accels)
	return slices.Compact(accels)
}
