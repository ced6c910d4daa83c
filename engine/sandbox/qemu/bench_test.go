package qemu

import (
	"bufio"
	"context"
	"io"
	"testing"
	"time"
)

// BenchmarkBootToFirstByte measures Start -> DialAgent -> first echoed
// byte from the guest's PID 1, then Destroy (not timed).
func BenchmarkBootToFirstByte(b *testing.B) {
	for b.Loop() {
		bootOnce(b)
	}
}

func bootOnce(b *testing.B) {
	b.Helper()
	d, cfg := needVM(b)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sb, err := d.Start(ctx, cfg)
	if err != nil {
		b.Fatalf("Start: %v", err)
	}
	defer func() {
		b.StopTimer()
		sb.Destroy()
		b.StartTimer()
	}()
	conn, err := sb.DialAgent(ctx)
	if err != nil {
		b.Fatalf("DialAgent: %v", err)
	}
	defer conn.Close()
	io.WriteString(conn, "x\n")
	if _, err := bufio.NewReader(conn).ReadString('\n'); err != nil {
		b.Fatalf("read: %v", err)
	}
}
