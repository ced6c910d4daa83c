package dnsserver

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestNameservers(t *testing.T) {
	self := netip.MustParseAddrPort("172.30.0.1:53")
	tests := []struct {
		name       string
		resolvConf string
		want       []string
	}{
		{"systemd-resolved's stub", "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n", []string{"127.0.0.53:53"}},
		{"comments and options", "# generated\n; nameserver 10.0.0.9\nnameserver 10.0.0.1 # office\nsearch example.org\n", []string{"10.0.0.1:53"}},
		{"IPv6, with a zone", "nameserver ::1\nnameserver fe80::1%eth0\n", []string{"[::1]:53", "[fe80::1%eth0]:53"}},
		{"glibc reads three", "nameserver 10.0.0.1\nnameserver 10.0.0.2\nnameserver 10.0.0.3\nnameserver 10.0.0.4\n",
			[]string{"10.0.0.1:53", "10.0.0.2:53", "10.0.0.3:53"}},
		{"the server itself is left out", "nameserver 172.30.0.1\nnameserver 10.0.0.1\n", []string{"10.0.0.1:53"}},
		{"only the server itself", "nameserver 172.30.0.1\n", []string{}},
		{"repeats and unspecified", "nameserver 10.0.0.1\nnameserver 10.0.0.1\nnameserver 0.0.0.0\n", []string{"10.0.0.1:53"}},
		{"malformed lines", "nameserver\nnameserver not-an-address\nnameserver10.0.0.1\nNAMESERVER 10.0.0.2\n", []string{"127.0.0.1:53"}},
		{"IPv4-mapped", "nameserver ::ffff:10.0.0.1\n", []string{"10.0.0.1:53"}},
		{"empty: the host's resolver asks 127.0.0.1", "", []string{"127.0.0.1:53"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, ap := range nameservers([]byte(tt.resolvConf), self) {
				got = append(got, ap.String())
			}
			if !slices.Equal(got, tt.want) && !(len(got) == 0 && len(tt.want) == 0) {
				t.Errorf("nameservers = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestUpstreamsReload: a changed resolv.conf is read again, at most every
// recheck, and a missing one means 127.0.0.1.
func TestUpstreamsReload(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resolv.conf")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	check := func(u *upstreams, want string) {
		t.Helper()
		got := u.get()
		if len(got) != 1 || got[0].String() != want {
			t.Fatalf("upstreams = %v, want %s", got, want)
		}
	}
	u := newUpstreams(path, netip.MustParseAddrPort("172.30.0.1:53"))
	u.recheck = 0
	check(u, "127.0.0.1:53")
	write("nameserver 10.0.0.1\n")
	check(u, "10.0.0.1:53")
	write("nameserver 10.0.0.2\n") // the same size, at once
	check(u, "10.0.0.2:53")
	u.recheck = time.Hour
	write("nameserver 10.0.0.3\n")
	check(u, "10.0.0.2:53") // not looked at again yet
	u.recheck = 0
	check(u, "10.0.0.3:53")
	os.Remove(path)
	check(u, "127.0.0.1:53")
}
