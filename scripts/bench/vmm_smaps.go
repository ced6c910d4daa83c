package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// vmmMemory is a VMM process's resident memory from /proc/PID/smaps, in
// KiB, split into guest RAM and everything else (the VMM's own overhead).
type vmmMemory struct {
	// RSS and PSS outside guest RAM.
	RSS, PSS uint64
	// GuestRSS is the resident part of the mappings taken for guest RAM.
	GuestRSS uint64
	// GuestMappings counts them: 1 for a single RAM block.
	GuestMappings int
}

// isGuestRAM tells a guest RAM mapping by size: both VMMs map the guest's
// RAM as one anonymous block of exactly its size (QEMU may round it up to
// a huge-page multiple plus a guard page, hence the slack). Nothing else
// a VMM maps for a 256 MiB guest comes close in size; Go's heap arenas
// are 64 MiB and reserved address space is not resident anyway.
func isGuestRAM(size, ramBytes uint64) bool {
	return size >= ramBytes && size <= ramBytes+ramBytes/16
}

// parseSmaps sums the Rss and Pss fields of smaps text, leaving out the
// mappings that hold ramBytes of guest RAM.
func parseSmaps(r io.Reader, ramBytes uint64) (vmmMemory, error) {
	var m vmmMemory
	guest := false
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		// A mapping header: "start-end perms offset dev inode [path]". Its
		// first field has a '-' and no ':', unlike "Rss:" lines.
		if span, _, _ := strings.Cut(line, " "); strings.Contains(span, "-") && !strings.HasSuffix(span, ":") {
			lo, hi, ok := strings.Cut(span, "-")
			start, err1 := strconv.ParseUint(lo, 16, 64)
			end, err2 := strconv.ParseUint(hi, 16, 64)
			if !ok || err1 != nil || err2 != nil || end < start {
				return m, fmt.Errorf("smaps: bad mapping line %q", line)
			}
			guest = isGuestRAM(end-start, ramBytes)
			if guest {
				m.GuestMappings++
			}
			continue
		}
		field, rest, ok := strings.Cut(line, ":")
		if !ok || (field != "Rss" && field != "Pss") {
			continue
		}
		kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
		if err != nil {
			return m, fmt.Errorf("smaps: bad %s line %q", field, line)
		}
		switch {
		case field == "Rss" && guest:
			m.GuestRSS += kb
		case field == "Rss":
			m.RSS += kb
		case field == "Pss" && !guest:
			m.PSS += kb
		}
	}
	if err := sc.Err(); err != nil {
		return m, fmt.Errorf("smaps: %w", err)
	}
	return m, nil
}

// readSmaps reads pid's smaps.
func readSmaps(pid int, ramBytes uint64) (vmmMemory, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return vmmMemory{}, err
	}
	defer f.Close()
	return parseSmaps(f, ramBytes)
}

func mib(kb uint64) float64 { return float64(kb) / 1024 }
