package server

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types"
	"github.com/moby/term"

	"github.com/vmctl/vmctl/engine/errs"
	"github.com/vmctl/vmctl/engine/services/containersvc"
)

func writeJSONBody(w io.Writer, v any) { json.NewEncoder(w).Encode(v) }

// muxWriter frames writes for Docker's multiplexed stream: an 8-byte header
// [stream, 0, 0, 0, length uint32 big-endian] before each payload. Both
// streams share one connection, hence the lock.
type muxWriter struct {
	mu     *sync.Mutex
	w      io.Writer
	stream byte
}

// maxFrame bounds one frame's payload; longer writes are split.
const maxFrame = 1 << 20

func (m muxWriter) Write(p []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	written := 0
	for len(p) > 0 {
		n := min(len(p), maxFrame)
		var h [8]byte
		h[0] = m.stream
		binary.BigEndian.PutUint32(h[4:], uint32(n))
		if _, err := m.w.Write(h[:]); err != nil {
			return written, err
		}
		k, err := m.w.Write(p[:n])
		written += k
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}

// lockedWriter serialises raw (tty) writes.
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// outputWriters returns the writers for stdout and stderr on one
// connection: framed unless the container has a terminal.
func outputWriters(w io.Writer, tty bool) (stdout, stderr io.Writer) {
	mu := &sync.Mutex{}
	if tty {
		lw := lockedWriter{mu: mu, w: w}
		return lw, lw
	}
	return muxWriter{mu: mu, w: w, stream: byte(containersvc.StreamStdout)},
		muxWriter{mu: mu, w: w, stream: byte(containersvc.StreamStderr)}
}

// streamType is the Content-Type of an attach or logs stream. dockerd says
// "multiplexed" only from API 1.42 on; older clients expect raw-stream
// even when frames are multiplexed.
func streamType(r *http.Request, tty bool) string {
	if !tty && apiAtLeast(r, 42) {
		return types.MediaTypeMultiplexedStream
	}
	return types.MediaTypeRawStream
}

// containerAttach hijacks the connection: the reply is "101 UPGRADED" when
// the client asked for an upgrade (both docker CLIs require it), else 200,
// then the container's output until its run ends. Bytes from the client are
// its stdin; EOF on the client's write side (a half-close) ends stdin.
func (s *Server) containerAttach(w http.ResponseWriter, r *http.Request) {
	flags, err := boolParams(r, "stream", "stdin", "stdout", "stderr", "logs")
	if err != nil {
		writeError(w, err)
		return
	}
	stream, stdin, stdout, stderr, logs := flags[0], flags[1], flags[2], flags[3], flags[4]
	c, err := s.containers.Get(r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return
	}
	// The detach keys (docker's --detach-keys, ctrl-p,ctrl-q by default)
	// end the attachment of a container with a terminal, as dockerd's do.
	var detachKeys []byte
	if c.Config.Tty && stdin {
		if detachKeys, err = parseDetachKeys(r.URL.Query().Get("detachKeys")); err != nil {
			writeError(w, err)
			return
		}
	}
	conn, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		writeError(w, err)
		return
	}
	defer conn.Close()
	untrack := s.track(conn)
	defer untrack()

	status := "200 OK"
	upgrade := r.Header.Get("Upgrade") != ""
	if upgrade {
		status = "101 UPGRADED"
	}
	head := "HTTP/1.1 " + status + "\r\nContent-Type: " + streamType(r, c.Config.Tty) + "\r\n"
	if upgrade {
		head += "Connection: Upgrade\r\nUpgrade: tcp\r\n"
	}
	head += "Api-Version: " + APIVersion + "\r\n\r\n"
	if _, err := conn.Write([]byte(head)); err != nil {
		return
	}

	o := containersvc.AttachOptions{}
	outOut, outErr := outputWriters(conn, c.Config.Tty)
	if logs && (stdout || stderr) {
		// logs=1: what the container wrote so far first, as dockerd sends
		// it; with stream=0 that is all.
		err := s.containers.Logs(r.Context(), c.ID, containersvc.LogsOptions{Stdout: stdout, Stderr: stderr, Tail: -1},
			func(e containersvc.LogEntry) error {
				if e.Stream == containersvc.StreamStderr {
					_, err := outErr.Write(e.Data)
					return err
				}
				_, err := outOut.Write(e.Data)
				return err
			})
		if err != nil {
			return
		}
	}
	if !stream {
		if cw, ok := conn.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		return
	}
	if stdout {
		o.Stdout = outOut
	}
	if stderr {
		o.Stderr = outErr
	}
	var in io.Reader
	if stdin {
		// Bytes the server read ahead while parsing the request are stdin too.
		in = io.MultiReader(bufReader(buf), conn)
		if detachKeys != nil {
			in = detachReader{term.NewEscapeProxy(in, detachKeys)}
		}
		o.Stdin = in
	}
	a, err := s.containers.Attach(c.ID, o)
	if err != nil {
		outErr.Write([]byte("Error: " + err.Error() + "\n"))
		return
	}
	defer s.containers.Detach(a)
	// Without stdin the client half-closes at once, so EOF from it cannot
	// tell "gone" from "only listening": a client that went away is noticed
	// by its failing writes, and the handler ends with the run.
	<-a.Done()
	// Let the client read the last frames before the close.
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}

// defaultDetachKeys are dockerd's.
const defaultDetachKeys = "ctrl-p,ctrl-q"

// parseDetachKeys turns docker's key list ("ctrl-p,ctrl-q", "" for that)
// into the bytes the keys send.
func parseDetachKeys(keys string) ([]byte, error) {
	if keys == "" {
		keys = defaultDetachKeys
	}
	b, err := term.ToBytes(keys)
	if err != nil || len(b) == 0 {
		return nil, errs.New(errdefs.ErrInvalidArgument, "invalid detach keys %q: want keys such as ctrl-p,ctrl-q", keys)
	}
	return b, nil
}

// detachReader turns the escape proxy's EscapeError into
// containersvc.ErrDetached.
type detachReader struct{ r io.Reader }

func (d detachReader) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	if _, ok := err.(term.EscapeError); ok {
		err = containersvc.ErrDetached
	}
	return n, err
}

// bufReader returns what the server buffered beyond the request.
func bufReader(buf *bufio.ReadWriter) io.Reader {
	if buf == nil || buf.Reader.Buffered() == 0 {
		return &io.LimitedReader{N: 0}
	}
	b, _ := buf.Reader.Peek(buf.Reader.Buffered())
	return io.LimitReader(buf.Reader, int64(len(b)))
}

func (s *Server) containerLogs(w http.ResponseWriter, r *http.Request) {
	flags, err := boolParams(r, "follow", "stdout", "stderr", "timestamps")
	if err != nil {
		writeError(w, err)
		return
	}
	follow, stdout, stderr, timestamps := flags[0], flags[1], flags[2], flags[3]
	if !stdout && !stderr {
		writeError(w, errs.New(errdefs.ErrInvalidArgument, "you must choose at least one stream"))
		return
	}
	q := r.URL.Query()
	var since, until time.Time
	if v := q.Get("since"); v != "" && v != "0" {
		if since, err = parseTimestamp("since", v); err != nil {
			writeError(w, err)
			return
		}
	}
	if v := q.Get("until"); v != "" && v != "0" {
		if until, err = parseTimestamp("until", v); err != nil {
			writeError(w, err)
			return
		}
	}
	tail := -1
	if v := q.Get("tail"); v != "" && v != "all" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			writeError(w, errs.New(errdefs.ErrInvalidArgument, "invalid tail %q: want a number or all", v))
			return
		}
		tail = n
	}
	c, err := s.containers.Get(r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", streamType(r, c.Config.Tty))
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	rc.Flush()
	outOut, outErr := outputWriters(w, c.Config.Tty)
	err = s.containers.Logs(r.Context(), c.ID, containersvc.LogsOptions{
		Stdout: stdout, Stderr: stderr, Tail: tail, Follow: follow, Since: since, Until: until,
	}, func(e containersvc.LogEntry) error {
		out := outOut
		if e.Stream == containersvc.StreamStderr {
			out = outErr
		}
		data := e.Data
		if timestamps {
			data = append([]byte(e.Time.Format(time.RFC3339Nano)+" "), data...)
		}
		if _, err := out.Write(data); err != nil {
			return err
		}
		if follow {
			return rc.Flush()
		}
		return nil
	})
	if err != nil && r.Context().Err() == nil {
		// Headers are gone; the error travels in the stream as dockerd does.
		outErr.Write([]byte("Error: " + err.Error() + "\n"))
	}
}

var _ net.Conn // the hijacked connection type
