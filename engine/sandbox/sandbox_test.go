package sandbox

import (
	"net"
	"strings"
	"testing"
)

func TestNICValidate(t *testing.T) {
	mac := net.HardwareAddr{0x02, 0x42, 0xac, 0x1e, 0, 2}
	tests := []struct {
		nic  NIC
		want string // "" valid, else part of the error
	}{
		{NIC{Tap: "vt0123456789ab", MAC: mac}, ""},
		{NIC{Tap: "vt0", MAC: mac, MTU: 68}, ""},
		{NIC{Tap: "vt0", MAC: mac, MTU: 65535}, ""},
		{NIC{MAC: mac}, "1 to 15 bytes"},
		{NIC{Tap: "vt0123456789abcd", MAC: mac}, "1 to 15 bytes"},
		{NIC{Tap: "vt,0", MAC: mac}, "not allowed"},
		{NIC{Tap: "vt 0", MAC: mac}, "not allowed"},
		{NIC{Tap: "vt/0", MAC: mac}, "not allowed"},
		{NIC{Tap: "vt0"}, "not a unicast"},
		{NIC{Tap: "vt0", MAC: net.HardwareAddr{2, 0, 0, 0, 0, 0, 0, 1}}, "not a unicast"},
		{NIC{Tap: "vt0", MAC: net.HardwareAddr{1, 0, 0x5e, 0, 0, 1}}, "not a unicast"},
		{NIC{Tap: "vt0", MAC: make(net.HardwareAddr, 6)}, "not a unicast"},
		{NIC{Tap: "vt0", MAC: mac, MTU: 67}, "outside 68..65535"},
		{NIC{Tap: "vt0", MAC: mac, MTU: 65536}, "outside 68..65535"},
		{NIC{Tap: "vt0", MAC: mac, MTU: -1}, "outside 68..65535"},
	}
	for _, tt := range tests {
		err := tt.nic.Validate()
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%+v.Validate() = %v, want %q", tt.nic, err, tt.want)
		}
	}
}
