package container

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"

	"github.com/creack/pty"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// MaxRead caps one ReadStdout/ReadStderr answer.
const MaxRead = 1 << 20

// Stream names a process output.
type Stream int

const (
	Stdout Stream = iota
	Stderr
)

// stdio holds the agent's ends of a process's standard streams: three pipes,
// or one pty master for a terminal.
type stdio struct {
	terminal bool
	stdin    *os.File
	out      [2]*os.File // stdout, stderr; both the master on a terminal

	// readMu guards the read state of each stream: sent is the stream
	// offset after the last chunk handed out, and pending that chunk until
	// a read acknowledges it (see read).
	readMu  [2]sync.Mutex
	sent    [2]uint64
	pending [2][]byte
	atEOF   [2]bool // a read has reported the stream's end
	writeMu sync.Mutex
	// stdinClosed is guarded by writeMu.
	stdinClosed bool

	// child holds the process's ends until it has started.
	child [3]*os.File
}

func newStdio(terminal bool, size *specs.Box) (*stdio, error) {
	s := &stdio{terminal: terminal}
	if terminal {
		master, slave, err := pty.Open()
		if err != nil {
			return nil, fmt.Errorf("open terminal: %w", err)
		}
		if size != nil && size.Height > 0 && size.Width > 0 {
			if err := pty.Setsize(master, &pty.Winsize{Rows: uint16(size.Height), Cols: uint16(size.Width)}); err != nil {
				master.Close()
				slave.Close()
				return nil, fmt.Errorf("set terminal size: %w", err)
			}
		}
		s.stdin, s.out[Stdout], s.out[Stderr] = master, master, nil
		s.child = [3]*os.File{slave, slave, slave}
		return s, nil
	}
	var files []*os.File
	for i := 0; i < 3; i++ {
		r, w, err := os.Pipe()
		if err != nil {
			for _, f := range files {
				f.Close()
			}
			return nil, fmt.Errorf("create pipe: %w", err)
		}
		files = append(files, r, w)
	}
	s.child = [3]*os.File{files[0], files[3], files[5]}
	s.stdin, s.out[Stdout], s.out[Stderr] = files[1], files[2], files[4]
	return s, nil
}

// closeChild drops the agent's copies of the process's ends, so the outputs
// reach EOF when the process side is gone.
func (s *stdio) closeChild() {
	for i, f := range s.child {
		if f != nil {
			f.Close()
			s.child[i] = nil
		}
	}
}

// read returns up to max bytes of a stream starting at offset, and the
// offset of the data's first byte; eof is set when the stream has ended. On
// a terminal, stderr is always at EOF (all output is on stdout) and EIO
// from the master means the slave side was closed.
//
// offset makes reads safe to retry. The last chunk handed out stays pending
// until a read names its end: a read from the pending chunk's start (the
// reader lost the answer, e.g. a restarted host) gets it again; a read from
// inside it gets the rest of it (the host kept part of the chunk: it logs a
// chunk line by line, and a daemon killed between two lines resumes after
// the last one it logged); a read from its end drops it and gets new data.
// Any other offset is refused, because the bytes it names are gone.
func (s *stdio) read(which Stream, max int, offset uint64) ([]byte, uint64, bool, error) {
	if which != Stdout && which != Stderr {
		return nil, 0, false, errorf(ErrInvalid, "unknown stream %d", which)
	}
	f := s.out[which]
	if f == nil {
		return nil, 0, true, nil
	}
	if max <= 0 || max > MaxRead {
		max = MaxRead
	}
	s.readMu[which].Lock()
	defer s.readMu[which].Unlock()
	if p := s.pending[which]; p != nil && offset >= s.sent[which]-uint64(len(p)) && offset < s.sent[which] {
		return p[len(p)-int(s.sent[which]-offset):], offset, false, nil
	}
	if offset != s.sent[which] {
		return nil, 0, false, errorf(ErrInvalid, "output offset %d is not available (the stream is at %d)", offset, s.sent[which])
	}
	s.pending[which] = nil
	buf := make([]byte, max)
	n, err := f.Read(buf)
	if n > 0 {
		s.pending[which] = buf[:n:n]
		s.sent[which] += uint64(n)
		return buf[:n:n], offset, false, nil
	}
	switch {
	case err == nil:
		return nil, offset, false, nil
	case err == io.EOF, errors.Is(err, os.ErrClosed), s.terminal && errors.Is(err, syscall.EIO):
		s.atEOF[which] = true
		return nil, offset, true, nil
	}
	return nil, 0, false, fmt.Errorf("read output: %w", err)
}

// drained reports whether every output has been read to its end (a
// terminal's stderr has none).
func (s *stdio) drained() bool {
	for _, which := range []Stream{Stdout, Stderr} {
		s.readMu[which].Lock()
		done := s.out[which] == nil || s.atEOF[which]
		s.readMu[which].Unlock()
		if !done {
			return false
		}
	}
	return true
}

func (s *stdio) write(p []byte) (int, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.stdinClosed {
		return 0, errorf(ErrState, "stdin is closed")
	}
	n, err := s.stdin.Write(p)
	if err != nil {
		if errors.Is(err, syscall.EPIPE) || errors.Is(err, os.ErrClosed) || errors.Is(err, syscall.EIO) {
			return n, errorf(ErrState, "the process no longer reads its input")
		}
		return n, fmt.Errorf("write stdin: %w", err)
	}
	return n, nil
}

// closeStdin closes the input pipe, or on a terminal sends the EOF
// character (^D), which the line discipline turns into end of input.
func (s *stdio) closeStdin() error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.stdinClosed {
		return nil
	}
	s.stdinClosed = true
	if s.terminal {
		if _, err := s.stdin.Write([]byte{4}); err != nil && !errors.Is(err, syscall.EIO) {
			return fmt.Errorf("send EOF to terminal: %w", err)
		}
		return nil
	}
	return s.stdin.Close()
}

func (s *stdio) resize(rows, cols uint32) error {
	if !s.terminal {
		return errorf(ErrState, "the process has no terminal")
	}
	if rows == 0 || cols == 0 || rows > 0xffff || cols > 0xffff {
		return errorf(ErrInvalid, "terminal size %dx%d is out of range", cols, rows)
	}
	if err := pty.Setsize(s.stdin, &pty.Winsize{Rows: uint16(rows), Cols: uint16(cols)}); err != nil {
		if errors.Is(err, os.ErrClosed) || errors.Is(err, syscall.EBADF) {
			// Released after the exit (see Process.releaseIfDone).
			return errorf(ErrState, "process has exited")
		}
		return fmt.Errorf("set terminal size: %w", err)
	}
	return nil
}

// close releases everything; pending reads return EOF.
func (s *stdio) close() {
	s.closeChild()
	s.writeMu.Lock()
	s.stdinClosed = true
	s.writeMu.Unlock()
	seen := map[*os.File]bool{}
	for _, f := range []*os.File{s.stdin, s.out[0], s.out[1]} {
		if f != nil && !seen[f] {
			seen[f] = true
			f.Close()
		}
	}
}
