package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// textRange is one read-only mapping of the executable: code or read-only
// data.
type textRange struct{ start, end uintptr }

// executableText lists the executable's read-only file mappings, from
// /proc/self/maps (read before the process confines itself: a jail has no
// /proc).
func executableText() ([]textRange, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return nil, err
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseText(bufio.NewScanner(f), exe)
}

func parseText(sc *bufio.Scanner, exe string) ([]textRange, error) {
	var out []textRange
	for sc.Scan() {
		// start-end perms offset dev inode path
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || strings.Join(fields[5:], " ") != exe {
			continue
		}
		if perms := fields[1]; perms != "r-xp" && perms != "r--p" {
			continue // never the writable data: dropping it would lose it
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		if !ok {
			return nil, fmt.Errorf("maps: bad range %q", fields[0])
		}
		s, err1 := strconv.ParseUint(lo, 16, 64)
		e, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || e <= s {
			return nil, fmt.Errorf("maps: bad range %q", fields[0])
		}
		out = append(out, textRange{uintptr(s), uintptr(e)})
	}
	return out, sc.Err()
}

// dropText lets go of the page table entries of the executable's code and
// read-only data once the VMM is set up. Most of it ran once (flag parsing,
// building the VM, the seccomp programs); what the running VM uses comes
// back on its first touch, a minor fault from the page cache, so the
// process keeps only its working set resident. MADV_DONTNEED on a private
// file mapping that was never written drops nothing but the mapping.
func dropText(rs []textRange) {
	for _, r := range rs {
		_, _, _ = unix.Syscall(unix.SYS_MADVISE, r.start, r.end-r.start, unix.MADV_DONTNEED)
	}
}
