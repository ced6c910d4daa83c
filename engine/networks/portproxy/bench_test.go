package portproxy

import (
	"io"
	"net"
	"net/netip"
	"testing"
)

// BenchmarkTCPRequest times a small request and its answer, on a new
// connection each time (HTTP/1.0-style) and on one kept open, straight to
// the server and through a proxy, all on 127.0.0.1.
func BenchmarkTCPRequest(b *testing.B) {
	const size = 512
	server, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer server.Close()
	go func() {
		for {
			c, err := server.AcceptTCP()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, size)
				for {
					if _, err := io.ReadFull(c, buf); err != nil {
						return
					}
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	direct := server.Addr().(*net.TCPAddr).AddrPort()
	p, err := Start(b.Context(), Binding{Proto: "tcp", HostIP: loopback, Container: direct}, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Stop()
	proxied := netip.AddrPortFrom(loopback, p.HostPort())

	request := func(b *testing.B, c net.Conn, buf []byte) {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
	}
	for _, target := range []struct {
		name string
		addr netip.AddrPort
	}{{"direct", direct}, {"proxied", proxied}} {
		b.Run("new-connection/"+target.name, func(b *testing.B) {
			buf := make([]byte, size)
			for b.Loop() {
				c, err := net.Dial("tcp", target.addr.String())
				if err != nil {
					b.Fatal(err)
				}
				request(b, c, buf)
				c.Close()
			}
		})
		b.Run("kept-open/"+target.name, func(b *testing.B) {
			c, err := net.Dial("tcp", target.addr.String())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			buf := make([]byte, size)
			for b.Loop() {
				request(b, c, buf)
			}
		})
	}
}
