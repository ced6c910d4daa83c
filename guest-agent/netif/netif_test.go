package netif

import (
	"os"
	"testing"
)

func TestLinkUp(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_NET_ADMIN)")
	}
	tests := []struct {
		name    string
		wantErr bool
	}{
		{"lo", false},
		{"no-such-link0", true},
		{"name-longer-than-ifnamsiz", true},
	}
	for _, tt := range tests {
		if err := LinkUp(tt.name); (err != nil) != tt.wantErr {
			t.Errorf("LinkUp(%q) = %v, want error %v", tt.name, err, tt.wantErr)
		}
	}
}
