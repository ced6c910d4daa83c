package transport

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestUsableCID(t *testing.T) {
	tests := []struct {
		cid  uint32
		want bool
	}{
		{unix.VMADDR_CID_HYPERVISOR, false},
		{unix.VMADDR_CID_LOCAL, false},
		{unix.VMADDR_CID_HOST, false},
		{3, true},
		{1024, true},
		{unix.VMADDR_CID_ANY, false},
	}
	for _, tt := range tests {
		if got := usableCID(tt.cid); got != tt.want {
			t.Errorf("usableCID(%d) = %v, want %v", tt.cid, got, tt.want)
		}
	}
}
