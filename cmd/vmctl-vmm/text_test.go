package main

import (
	"bufio"
	"strings"
	"testing"
)

func TestParseText(t *testing.T) {
	maps := `00400000-006cb000 r-xp 00000000 00:1f 123 /x/vmctl-vmm
006cb000-00a1e000 r--p 002cb000 00:1f 123 /x/vmctl-vmm
00a1e000-00a3c000 rw-p 0061e000 00:1f 123 /x/vmctl-vmm
00a3c000-02a75000 rw-p 00000000 00:00 0
7f0000000000-7f0000100000 r-xp 00000000 00:1f 9 /x/other
7f0000200000-7f0000300000 r--p 00000000 00:1f 10 /x/vmctl-vmm (deleted)
`
	got, err := parseText(bufio.NewScanner(strings.NewReader(maps)), "/x/vmctl-vmm")
	if err != nil {
		t.Fatal(err)
	}
	want := []textRange{{0x400000, 0x6cb000}, {0x6cb000, 0xa1e000}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("parseText = %x, want %x (never the writable data, nor another file's)", got, want)
	}
	if _, err := parseText(bufio.NewScanner(strings.NewReader("zz-0 r-xp 0 0 0 /x/vmctl-vmm\n")), "/x/vmctl-vmm"); err == nil {
		t.Fatal("a bad range was accepted")
	}
}
