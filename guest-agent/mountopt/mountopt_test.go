package mountopt

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestParse(t *testing.T) {
	tests := []struct {
		opts        []string
		flags, prop uintptr
		data        string
	}{
		{nil, 0, 0, ""},
		{[]string{"nosuid", "nodev", "mode=755", "size=64k"}, unix.MS_NOSUID | unix.MS_NODEV, 0, "mode=755,size=64k"},
		{[]string{"rbind", "ro", "rprivate"}, unix.MS_BIND | unix.MS_REC | unix.MS_RDONLY, unix.MS_PRIVATE | unix.MS_REC, ""},
		{[]string{"ro", "rw"}, 0, 0, ""},
		{[]string{"newinstance", "ptmxmode=0666"}, 0, 0, "newinstance,ptmxmode=0666"},
	}
	for _, tt := range tests {
		f, p, d := Parse(tt.opts)
		if f != tt.flags || p != tt.prop || d != tt.data {
			t.Errorf("Parse(%q) = %#x, %#x, %q; want %#x, %#x, %q", tt.opts, f, p, d, tt.flags, tt.prop, tt.data)
		}
	}
}
