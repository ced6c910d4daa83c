package main

import (
	"strings"
	"testing"
)

// smapsSample is the shape of /proc/PID/smaps: a 4 KiB text mapping, the
// 256 MiB guest RAM block and an anonymous heap mapping.
const smapsSample = `00400000-00401000 r-xp 00000000 fe:00 10604530                           /usr/bin/vmm
Size:                  4 kB
Rss:                   4 kB
Pss:                   2 kB
7f4e6de00000-7f4e7de00000 rw-p 00000000 00:00 0 
Size:             262144 kB
Rss:                7236 kB
Pss:                7236 kB
Pss_Dirty:          7236 kB
11832fc00000-118330400000 rw-p 00000000 00:00 0 
Size:               8192 kB
Rss:                 780 kB
Pss:                 780 kB
VmFlags: rd wr mr mw me ac sd
`

func TestParseSmaps(t *testing.T) {
	tests := []struct {
		name    string
		text    string
		ram     uint64
		want    vmmMemory
		wantErr bool
	}{
		{"guest RAM left out", smapsSample, 256 << 20, vmmMemory{RSS: 784, PSS: 782, GuestRSS: 7236, GuestMappings: 1}, false},
		{"other RAM size: nothing left out", smapsSample, 1 << 30, vmmMemory{RSS: 8020, PSS: 8018}, false},
		{"small RAM size matches the heap too", smapsSample, 8 << 20, vmmMemory{RSS: 7240, PSS: 7238, GuestRSS: 780, GuestMappings: 1}, false},
		{"empty", "", 256 << 20, vmmMemory{}, false},
		{"bad Rss", "00400000-00401000 r-xp 0 0 0\nRss: many kB\n", 256 << 20, vmmMemory{}, true},
		{"bad range", "00400000-zz r-xp 0 0 0\nRss: 4 kB\n", 256 << 20, vmmMemory{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseSmaps(strings.NewReader(tt.text), tt.ram)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseSmaps() error = %v, want error %v", err, tt.wantErr)
			}
			if !tt.wantErr && got != tt.want {
				t.Errorf("parseSmaps() = %+v, want %+v", got, tt.want)
			}
		})
	}
}
