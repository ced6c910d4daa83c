package hybridvsock

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeVMM serves the hybrid vsock socket the way a VMM does as far as the
// client can tell: it reads the CONNECT line and lets behave play the rest
// (answer, stream bytes, close, or nothing). It reports each CONNECT line.
func fakeVMM(t *testing.T, behave func(c net.Conn)) (socket string, lines <-chan string) {
	t.Helper()
	socket = filepath.Join(t.TempDir(), "v.sock")
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 16)
	done := make(chan struct{})
	t.Cleanup(func() { l.Close(); close(done) })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil {
					return
				}
				got <- line
				behave(c)
				// Keep the connection open until the test ends, unless
				// behave closed it: a close is an answer too.
				select {
				case <-done:
				case <-time.After(10 * time.Second):
				}
			}()
		}
	}()
	return socket, got
}

// writes sends each piece in its own write, apart in time, so that the
// client sees them in separate reads.
func writes(pieces ...string) func(net.Conn) {
	return func(c net.Conn) {
		for i, p := range pieces {
			if i > 0 {
				time.Sleep(20 * time.Millisecond)
			}
			io.WriteString(c, p)
		}
	}
}

func closeAfter(pieces ...string) func(net.Conn) {
	return func(c net.Conn) {
		writes(pieces...)(c)
		c.Close()
	}
}

func TestDialHandsOverTheStream(t *testing.T) {
	for _, tc := range []struct {
		name   string
		behave func(net.Conn)
	}{
		{"answer and stream in one write", writes("OK 1073741824\nhello")},
		{"answer split across reads", writes("O", "K 10", "73741824", "\n", "hel", "lo")},
		{"stream only later", writes("OK 5\n", "hello")},
		{"stream bytes that look like an answer", writes("OK 5\nhello\nOK 6\n")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sock, lines := fakeVMM(t, tc.behave)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			conn, err := Dial(ctx, sock, 1024)
			if err != nil {
				t.Fatalf("Dial: %v", err)
			}
			defer conn.Close()
			if line := <-lines; line != "CONNECT 1024\n" {
				t.Errorf("the VMM read %q, want \"CONNECT 1024\\n\"", line)
			}
			conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			buf := make([]byte, 5)
			if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "hello" {
				t.Errorf("first stream bytes = %q, %v; want hello", buf, err)
			}
		})
	}
}

// A ctx that ends after Dial returned leaves the connection alone.
func TestDialContextEndsWithTheHandshake(t *testing.T) {
	sock, _ := fakeVMM(t, writes("OK 1\n", "", "late"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	conn, err := Dial(ctx, sock, 1024)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer conn.Close()
	cancel()
	buf := make([]byte, 4)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "late" {
		t.Errorf("read after ctx ended = %q, %v; want late", buf, err)
	}
}

func TestDialFailures(t *testing.T) {
	long := strings.Repeat("OK 1", 20) + "\n"
	for _, tc := range []struct {
		name    string
		behave  func(net.Conn)
		refused bool
		want    string // in the error
	}{
		{"closed without answer", closeAfter(), true, "refused: "},
		{"garbled", writes("NOPE\n"), false, `"NOPE"`},
		{"garbled in pieces", writes("ER", "R\n"), false, `"ERR"`},
		{"not a port", writes("OK x\n"), false, `"OK x"`},
		{"port out of range", writes("OK 4294967296\n"), false, `"OK 4294967296"`},
		{"no port", writes("OK\n"), false, `"OK"`},
		{"trailing space", writes("OK 5 \n"), false, `"OK 5 "`},
		{"too long", writes(long), false, "not \"OK <port>\""},
		{"closed mid-answer", closeAfter("OK 12"), false, `middle of its answer "OK 12"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sock, _ := fakeVMM(t, tc.behave)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			conn, err := Dial(ctx, sock, 1024)
			if err == nil {
				conn.Close()
				t.Fatal("Dial succeeded")
			}
			if errors.Is(err, ErrRefused) != tc.refused {
				t.Errorf("Dial: %v; refused = %v, want %v", err, !tc.refused, tc.refused)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "vsock port 1024: ") {
				t.Errorf("Dial: %v; want \"vsock port 1024: ...%s...\"", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("Dial: %q is more than one line", err)
			}
		})
	}
}

func TestDialNoSocket(t *testing.T) {
	_, err := Dial(context.Background(), filepath.Join(t.TempDir(), "missing.sock"), 1024)
	if !errors.Is(err, os.ErrNotExist) || errors.Is(err, ErrRefused) {
		t.Errorf("Dial to a missing socket: %v; want does not exist", err)
	}
}

// A VMM that never answers: the handshake ends with ctx, whether its
// deadline passes or it is cancelled.
func TestDialSilentVMM(t *testing.T) {
	sock, _ := fakeVMM(t, func(net.Conn) {})
	for _, tc := range []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		want error
	}{
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 200*time.Millisecond)
		}, context.DeadlineExceeded},
		{"cancel", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(200*time.Millisecond, cancel)
			return ctx, cancel
		}, context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := tc.ctx()
			defer cancel()
			start := time.Now()
			conn, err := Dial(ctx, sock, 1024)
			if err == nil {
				conn.Close()
				t.Fatal("Dial succeeded")
			}
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), "no answer to CONNECT") {
				t.Errorf("Dial: %v; want no answer: %v", err, tc.want)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("Dial returned after %v, long after ctx ended", d)
			}
		})
	}
}

// Without a nearer ctx deadline, a silent VMM is given up after
// answerTimeout, so that a caller's retry loop can look at why.
func TestDialStuckVMM(t *testing.T) {
	sock, _ := fakeVMM(t, func(net.Conn) {})
	defer func(d time.Duration) { answerTimeout = d }(answerTimeout)
	answerTimeout = 200 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	conn, err := Dial(ctx, sock, 1024)
	if err == nil {
		conn.Close()
		t.Fatal("Dial succeeded")
	}
	if errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "no answer to CONNECT within 200ms") {
		t.Errorf("Dial: %v; want no answer within 200ms", err)
	}
}

func TestCheckAnswer(t *testing.T) {
	for _, line := range []string{"OK 0", "OK 1024", "OK 4294967295"} {
		if err := checkAnswer(line); err != nil {
			t.Errorf("checkAnswer(%q) = %v, want nil", line, err)
		}
	}
	for _, line := range []string{"", "OK", "OK ", "ok 5", "OK -1", "OK +1", "OK 0x10", " OK 5", "OK 5\r", "FAILED 5"} {
		if err := checkAnswer(line); err == nil {
			t.Errorf("checkAnswer(%q) = nil, want an error", line)
		}
	}
}

// The answer comes from the VMM, a process of its own that the engine does
// not trust further than its socket: any bytes give a line or an error,
// and a line leaves everything after its newline unread.
func FuzzReadAnswer(f *testing.F) {
	for _, seed := range []string{"OK 1024\nhello", "OK 1", "NOPE\n", "", "\n", strings.Repeat("O", 40) + "\n", "OK 4294967296\n\x00"} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		line, err := readAnswer(r)
		if err != nil {
			return
		}
		if consumed := len(data) - r.Len(); consumed != len(line)+1 || data[len(line)] != '\n' {
			t.Fatalf("readAnswer(%q) = %q after consuming %d bytes, want the line and its newline only", data, line, consumed)
		}
		if len(line) > maxAnswer || strings.Contains(line, "\n") {
			t.Fatalf("readAnswer(%q) = %q", data, line)
		}
		if checkAnswer(line) == nil && (!strings.HasPrefix(line, "OK ") || strings.ContainsAny(line[3:], " \r\t+-")) {
			t.Fatalf("checkAnswer(%q) accepted it", line)
		}
	})
}
