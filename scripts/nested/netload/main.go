// Command netload is the TCP load generator of the nested network
// scenarios and of the network benchmark. Static, it runs on both ends:
// as the server in the guest (L2), whose initramfs it also builds, and as
// the client in L1, the guest's host.
//
//	netload serve [-listen :5201]         server (the guest); QUIT ends it
//	netload wait -to ADDR [-timeout D]    until the server answers
//	netload send -to ADDR ...             client to server: throughput, integrity
//	netload recv -to ADDR ...             server to client: throughput, integrity
//	netload rr -to ADDR [-n N] [-size B]  request/response latency
//	netload quit -to ADDR                 ends the server (the guest reboots)
//	netload mktap NAME [-mtu N]           a persistent tap with IFF_VNET_HDR
//	netload l2image -o FILE               the guest initramfs (busybox, netload, /init)
//
// One TCP connection per measurement; its first line says what it is for:
// "SINK <verify>", "SOURCE <bytes> <seed> <verify> <ms>", "ECHO <size>",
// "PING" or "QUIT". With verification the stream is pseudo-random
// (ChaCha8 from a seed) and both ends hash it (SHA-256), so any corrupted,
// lost or reordered byte fails the run; without, a block of it is
// repeated and nothing is hashed, so that the measurement is of the
// network path rather than of the hashing. Results are one line each:
//
//	NETLOAD send label=L bytes=N secs=S mbps=M verified=yes|no
//	NETLOAD recv label=L bytes=N secs=S mbps=M verified=yes|no
//	NETLOAD rr label=L n=N size=B mean_us=U p50_us=U p90_us=U p99_us=U
//
// mean_us is the whole run's time over N, which stays meaningful where the
// clock is coarse (an L1 on jiffies ticks in 4 ms steps); the percentiles
// need a fine clock.
package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	cmd, args := os.Args[1], os.Args[2:]
	var err error
	switch cmd {
	case "serve":
		err = serve(args)
	case "wait":
		err = wait(args)
	case "send", "recv":
		err = transfer(cmd, args)
	case "rr":
		err = requestResponse(args)
	case "quit":
		err = quit(args)
	case "mktap":
		err = mktap(args)
	case "l2image":
		err = l2image(args)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "netload %s: %v\n", cmd, err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: netload serve|wait|send|recv|rr|quit|mktap|l2image [flags] (see the package comment)")
	os.Exit(2)
}

// blockSize is the unit of writes and of the repeated unverified stream.
const blockSize = 256 << 10

// stream produces the bytes of a transfer: pseudo-random from seed with
// verification, else one such block repeated.
type stream struct {
	rng    *rand.ChaCha8
	block  []byte
	verify bool
}

func newStream(seed uint64, verify bool) *stream {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	s := &stream{rng: rand.NewChaCha8(key), block: make([]byte, blockSize), verify: verify}
	s.rng.Read(s.block)
	return s
}

// next returns the next n bytes (n <= blockSize), valid until the next call.
func (s *stream) next(n int) []byte {
	if s.verify {
		s.rng.Read(s.block[:n])
	}
	return s.block[:n]
}

// hashOf is the SHA-256 of the first n bytes of the verified stream of seed.
func hashOf(seed uint64, n int64) string {
	s := newStream(seed, true)
	h := sha256.New()
	for n > 0 {
		k := min(n, blockSize)
		h.Write(s.next(int(k)))
		n -= k
	}
	return hex.EncodeToString(h.Sum(nil))
}

// ---- server ----

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	listen := fs.String("listen", ":5201", "TCP address to listen on")
	fs.Parse(args)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	defer ln.Close()
	fmt.Printf("netload: serving on %s\n", ln.Addr())
	quit := make(chan struct{})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				if handle(c) {
					close(quit)
				}
			}()
		}
	}()
	<-quit
	return nil
}

// handle serves one connection; it returns true for QUIT.
func handle(c net.Conn) (quit bool) {
	defer c.Close()
	r := bufio.NewReaderSize(c, blockSize)
	line, err := r.ReadString('\n')
	if err != nil {
		return false // a probe that connected and left
	}
	f := strings.Fields(line)
	if len(f) == 0 {
		return false
	}
	if err := serveOne(c, r, f); err != nil {
		fmt.Fprintf(os.Stderr, "netload: %s: %v\n", f[0], err)
	}
	return f[0] == "QUIT"
}

func serveOne(c net.Conn, r *bufio.Reader, f []string) error {
	num := func(i int) (int64, error) {
		if i >= len(f) {
			return 0, fmt.Errorf("%q: missing argument %d", strings.Join(f, " "), i)
		}
		return strconv.ParseInt(f[i], 10, 64)
	}
	switch f[0] {
	case "PING":
		_, err := io.WriteString(c, "PONG\n")
		return err
	case "QUIT":
		_, err := io.WriteString(c, "BYE\n")
		return err
	case "SINK":
		verify, err := num(1)
		if err != nil {
			return err
		}
		var h hash.Hash
		dst := io.Discard
		if verify == 1 {
			h = sha256.New()
			dst = h
		}
		n, err := io.CopyBuffer(dst, r, make([]byte, blockSize))
		if err != nil {
			return err
		}
		sum := "-"
		if h != nil {
			sum = hex.EncodeToString(h.Sum(nil))
		}
		_, err = fmt.Fprintf(c, "OK %d %s\n", n, sum)
		return err
	case "SOURCE":
		var v [4]int64
		for i := range v {
			var err error
			if v[i], err = num(i + 1); err != nil {
				return err
			}
		}
		total, seed, verify, ms := v[0], uint64(v[1]), v[2] == 1, v[3]
		s := newStream(seed, verify)
		deadline := time.Now().Add(time.Duration(ms) * time.Millisecond)
		for sent := int64(0); total > 0 && sent < total || total == 0 && time.Now().Before(deadline); {
			k := int64(blockSize)
			if total > 0 {
				k = min(k, total-sent)
			}
			if _, err := c.Write(s.next(int(k))); err != nil {
				return err
			}
			sent += k
		}
		return c.(*net.TCPConn).CloseWrite()
	case "ECHO":
		size, err := num(1)
		if err != nil || size <= 0 || size > blockSize {
			return fmt.Errorf("ECHO size %q", f[1:])
		}
		buf := make([]byte, size)
		for {
			if _, err := io.ReadFull(r, buf); err != nil {
				return nil // the client is done
			}
			if _, err := c.Write(buf); err != nil {
				return err
			}
		}
	}
	return fmt.Errorf("unknown request %q", f[0])
}

// ---- clients ----

type clientFlags struct {
	fs       *flag.FlagSet
	to       *string
	label    *string
	timeout  *time.Duration
	bytes    *string
	duration *time.Duration
	verify   *bool
	seed     *uint64
}

func newClientFlags(name string) clientFlags {
	fs := flag.NewFlagSet(name, flag.ExitOnError)
	return clientFlags{
		fs:       fs,
		to:       fs.String("to", "", "server `host:port`"),
		label:    fs.String("label", "-", "label printed with the result"),
		timeout:  fs.Duration("timeout", 2*time.Minute, "time allowed for the whole run"),
		bytes:    fs.String("bytes", "", "bytes to transfer (suffix K, M or G); exclusive with -duration"),
		duration: fs.Duration("duration", 0, "transfer for this long instead of a byte count"),
		verify:   fs.Bool("verify", true, "pseudo-random data, hashed on both ends"),
		seed:     fs.Uint64("seed", 1, "seed of the pseudo-random stream"),
	}
}

func (cf clientFlags) dial() (net.Conn, error) {
	if *cf.to == "" {
		return nil, errors.New("no -to")
	}
	c, err := net.DialTimeout("tcp", *cf.to, 10*time.Second)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(*cf.timeout))
	return c, nil
}

func parseSize(s string) (int64, error) {
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "K"):
		mult, s = 1<<10, strings.TrimSuffix(s, "K")
	case strings.HasSuffix(s, "M"):
		mult, s = 1<<20, strings.TrimSuffix(s, "M")
	case strings.HasSuffix(s, "G"):
		mult, s = 1<<30, strings.TrimSuffix(s, "G")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("size %q", s)
	}
	return n * mult, nil
}

// transfer measures one direction: send (client to server, the SINK
// request) or recv (server to client, SOURCE).
func transfer(dir string, args []string) error {
	cf := newClientFlags(dir)
	cf.fs.Parse(args)
	var total int64
	if *cf.bytes != "" {
		var err error
		if total, err = parseSize(*cf.bytes); err != nil {
			return err
		}
	}
	if (total == 0) == (*cf.duration == 0) {
		return errors.New("give one of -bytes N or -duration D")
	}
	c, err := cf.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	verify := 0
	if *cf.verify {
		verify = 1
	}
	var n int64
	var ok string
	start := time.Now()
	if dir == "send" {
		n, ok, err = sendTo(c, cf, total, verify)
	} else {
		n, ok, err = receiveFrom(c, cf, total, verify)
	}
	secs := time.Since(start).Seconds()
	if err != nil {
		return err
	}
	fmt.Printf("NETLOAD %s label=%s bytes=%d secs=%.3f mbps=%.1f verified=%s\n",
		dir, *cf.label, n, secs, float64(n)*8/secs/1e6, ok)
	return nil
}

func sendTo(c net.Conn, cf clientFlags, total int64, verify int) (int64, string, error) {
	if _, err := fmt.Fprintf(c, "SINK %d\n", verify); err != nil {
		return 0, "", err
	}
	s := newStream(*cf.seed, verify == 1)
	h := sha256.New()
	deadline := time.Now().Add(*cf.duration)
	var sent int64
	for total > 0 && sent < total || total == 0 && time.Now().Before(deadline) {
		k := int64(blockSize)
		if total > 0 {
			k = min(k, total-sent)
		}
		b := s.next(int(k))
		if verify == 1 {
			h.Write(b)
		}
		if _, err := c.Write(b); err != nil {
			return sent, "", fmt.Errorf("after %d bytes: %w", sent, err)
		}
		sent += k
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return sent, "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return sent, "", fmt.Errorf("no answer from the server after %d bytes: %w", sent, err)
	}
	var got int64
	var sum string
	if _, err := fmt.Sscanf(line, "OK %d %s", &got, &sum); err != nil {
		return sent, "", fmt.Errorf("server answered %q", line)
	}
	if got != sent {
		return sent, "", fmt.Errorf("sent %d bytes, the server got %d", sent, got)
	}
	if verify == 0 {
		return sent, "no", nil
	}
	if want := hex.EncodeToString(h.Sum(nil)); sum != want {
		return sent, "", fmt.Errorf("the server's SHA-256 of %d bytes is %s, want %s", got, sum, want)
	}
	return sent, "yes", nil
}

func receiveFrom(c net.Conn, cf clientFlags, total int64, verify int) (int64, string, error) {
	ms := cf.duration.Milliseconds()
	if _, err := fmt.Fprintf(c, "SOURCE %d %d %d %d\n", total, *cf.seed, verify, ms); err != nil {
		return 0, "", err
	}
	h := sha256.New()
	var dst io.Writer = io.Discard
	if verify == 1 {
		dst = h
	}
	n, err := io.CopyBuffer(dst, c, make([]byte, blockSize))
	if err != nil {
		return n, "", fmt.Errorf("after %d bytes: %w", n, err)
	}
	if total > 0 && n != total {
		return n, "", fmt.Errorf("got %d bytes, want %d", n, total)
	}
	if verify == 0 {
		return n, "no", nil
	}
	if got, want := hex.EncodeToString(h.Sum(nil)), hashOf(*cf.seed, n); got != want {
		return n, "", fmt.Errorf("SHA-256 of the %d bytes received is %s, want %s", n, got, want)
	}
	return n, "yes", nil
}

func requestResponse(args []string) error {
	cf := newClientFlags("rr")
	n := cf.fs.Int("n", 2000, "requests measured (after 100 unmeasured)")
	size := cf.fs.Int("size", 64, "bytes per request and per response")
	cf.fs.Parse(args)
	if *size <= 0 || *size > blockSize || *n <= 0 {
		return errors.New("-size must be 1 to 256K and -n positive")
	}
	c, err := cf.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := fmt.Fprintf(c, "ECHO %d\n", *size); err != nil {
		return err
	}
	req, resp := make([]byte, *size), make([]byte, *size)
	lat := make([]time.Duration, 0, *n)
	var start time.Time
	for i := range 100 + *n {
		if i == 100 {
			start = time.Now()
		}
		binary.LittleEndian.PutUint32(req, uint32(i))
		t0 := time.Now()
		if _, err := c.Write(req); err != nil {
			return err
		}
		if _, err := io.ReadFull(c, resp); err != nil {
			return err
		}
		d := time.Since(t0)
		if binary.LittleEndian.Uint32(resp) != uint32(i) {
			return fmt.Errorf("response %d answers request %d", i, binary.LittleEndian.Uint32(resp))
		}
		if i >= 100 {
			lat = append(lat, d)
		}
	}
	mean := time.Since(start) / time.Duration(*n)
	slices.Sort(lat)
	pct := func(p int) int64 { return lat[min(len(lat)-1, len(lat)*p/100)].Microseconds() }
	fmt.Printf("NETLOAD rr label=%s n=%d size=%d mean_us=%d p50_us=%d p90_us=%d p99_us=%d\n",
		*cf.label, *n, *size, mean.Microseconds(), pct(50), pct(90), pct(99))
	return nil
}

// wait retries until the server answers PING, for a guest still booting.
func wait(args []string) error {
	cf := newClientFlags("wait")
	cf.fs.Parse(args)
	deadline := time.Now().Add(*cf.timeout)
	start := time.Now()
	var last error
	for time.Now().Before(deadline) {
		if last = ping(*cf.to); last == nil {
			fmt.Printf("netload: %s answered after %.2fs\n", *cf.to, time.Since(start).Seconds())
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("%s did not answer within %v: %v", *cf.to, *cf.timeout, last)
}

func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "PING\n"); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "PONG\n" {
		return fmt.Errorf("PING answered %q, %v", line, err)
	}
	return nil
}

func quit(args []string) error {
	cf := newClientFlags("quit")
	cf.fs.Parse(args)
	c, err := cf.dial()
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := io.WriteString(c, "QUIT\n"); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "BYE\n" {
		return fmt.Errorf("QUIT answered %q, %v", line, err)
	}
	return nil
}
