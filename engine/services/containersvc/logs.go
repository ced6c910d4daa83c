package containersvc

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// Stream names one of a container's output streams.
type Stream uint8

// The values are the stream bytes of Docker's multiplexed framing, so a
// front end can use them as they are.
const (
	StreamStdout Stream = 1
	StreamStderr Stream = 2
)

// The container log is a sequence of entries, each one output chunk of one
// stream, split at newlines so that "the last N entries" is "the last N
// lines" as users expect from docker logs --tail:
//
//	offset 0  stream  (1 byte: 1 stdout, 2 stderr)
//	offset 1  zero    (3 bytes)
//	offset 4  length  (uint32 big-endian, at most maxLogEntry)
//	offset 8  time    (int64 big-endian, Unix nanoseconds)
//	offset 16 data    (length bytes)
//
// A binary framing keeps any byte the container writes intact (a JSON
// string would not). The file survives stop/start and goes with the
// container.
const (
	logHeaderLen = 16
	maxLogEntry  = 1 << 20
	logFileName  = "stdio.log"
)

// LogEntry is one chunk of a container's output.
type LogEntry struct {
	Stream Stream
	Time   time.Time
	Data   []byte
}

// logWriter appends entries to a container log. Not safe for concurrent
// use: the task serializes writes.
type logWriter struct {
	f *os.File
	// size is the length of the file's complete entries: a failed write
	// is cut back to it.
	size int64
}

func openLog(path string) (*logWriter, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("container log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("container log: %w", err)
	}
	return &logWriter{f: f, size: fi.Size()}, nil
}

// write stores data as one entry per line. Each entry goes out in one
// write(2), so a concurrent reader sees whole entries or a short tail it
// can retry.
func (w *logWriter) write(stream Stream, at time.Time, data []byte) error {
	for len(data) > 0 {
		n := len(data)
		for i, b := range data {
			if b == '\n' {
				n = i + 1
				break
			}
		}
		n = min(n, maxLogEntry)
		buf := make([]byte, logHeaderLen+n)
		buf[0] = byte(stream)
		binary.BigEndian.PutUint32(buf[4:], uint32(n))
		binary.BigEndian.PutUint64(buf[8:], uint64(at.UnixNano()))
		copy(buf[logHeaderLen:], data[:n])
		if _, err := w.f.Write(buf); err != nil {
			// A short write (a full disk) leaves half an entry, after
			// which every entry appended later, by this run or the next,
			// would be read as part of it: cut it off.
			w.f.Truncate(w.size)
			return fmt.Errorf("container log: %w", err)
		}
		w.size += int64(len(buf))
		data = data[n:]
	}
	return nil
}

func (w *logWriter) close() error { return w.f.Close() }

// errLogCorrupt means an entry header makes no sense: the file was not
// written by logWriter, or was damaged.
var errLogCorrupt = errors.New("container log is corrupt")

// readLogEntry reads one entry. io.EOF means no more complete entries (a
// partial one may still be being written); errLogCorrupt means give up.
func readLogEntry(r io.Reader) (LogEntry, int, error) {
	var h [logHeaderLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return LogEntry{}, 0, io.EOF
	}
	stream := Stream(h[0])
	n := binary.BigEndian.Uint32(h[4:])
	if (stream != StreamStdout && stream != StreamStderr) || h[1]|h[2]|h[3] != 0 || n > maxLogEntry {
		return LogEntry{}, 0, errLogCorrupt
	}
	data := make([]byte, n)
	if _, err := io.ReadFull(r, data); err != nil {
		return LogEntry{}, 0, io.EOF
	}
	at := time.Unix(0, int64(binary.BigEndian.Uint64(h[8:]))).UTC()
	return LogEntry{Stream: stream, Time: at, Data: data}, logHeaderLen + int(n), nil
}

// logOffsets returns how many bytes of each stream the log holds from
// entries written at or after since (the start of the current run), by
// Stream. A missing log holds nothing.
//
// An incomplete entry at the end (its writer was killed in the middle of
// the write) is cut off: its bytes are not counted, so they are read from
// the agent again, and entries appended next must not follow half an
// entry.
func logOffsets(path string, since time.Time) ([3]uint64, error) {
	var off [3]uint64
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return off, nil
	}
	if err != nil {
		return off, fmt.Errorf("container log: %w", err)
	}
	defer f.Close()
	r := bufio.NewReader(f)
	var end int64
	for {
		e, n, err := readLogEntry(r)
		if err == io.EOF {
			break
		}
		if err != nil {
			return off, fmt.Errorf("%w: %s", err, path)
		}
		end += int64(n)
		if !e.Time.Before(since) {
			off[e.Stream] += uint64(len(e.Data))
		}
	}
	fi, err := f.Stat()
	if err != nil {
		return off, fmt.Errorf("container log: %w", err)
	}
	if fi.Size() > end {
		if err := f.Truncate(end); err != nil {
			return off, fmt.Errorf("container log: cut off an incomplete entry: %w", err)
		}
	}
	return off, nil
}

// LogsOptions selects what Logs returns.
type LogsOptions struct {
	Stdout, Stderr bool
	// Tail is how many of the last entries to return; negative means all.
	Tail int
	// Follow keeps returning new output until the container's current run
	// has ended and its exit is recorded, or ctx is done, or Until passed.
	Follow bool
	// Since and Until, when set, keep the entries written in [Since, Until]
	// (docker logs --since, --until); Tail counts among those.
	Since, Until time.Time
}

// Logs calls emit for each stored output entry of the container, oldest
// first. An error from emit (the client went away) ends Logs with it.
func (s *Service) Logs(ctx context.Context, ref string, o LogsOptions, emit func(LogEntry) error) error {
	c, err := s.cfg.Store.Get(ref)
	if err != nil {
		return err
	}
	// Take the run to follow before reading, so output written between the
	// read and the check is not missed: the loop below reads until the run
	// is over.
	var t *task
	if o.Follow {
		t = s.task(c.ID)
	}
	f, err := os.Open(filepath.Join(s.cfg.Store.Dir(c.ID), logFileName))
	if errors.Is(err, os.ErrNotExist) {
		if t == nil {
			return nil // never started: no output yet
		}
		// Started but the log is not open yet: wait for the run to write it.
		f, err = waitForLog(ctx, t, filepath.Join(s.cfg.Store.Dir(c.ID), logFileName))
		if f == nil {
			return err
		}
	} else if err != nil {
		return fmt.Errorf("container log: %w", err)
	}
	defer f.Close()

	want := func(e LogEntry) bool {
		if (!o.Since.IsZero() && e.Time.Before(o.Since)) || (!o.Until.IsZero() && e.Time.After(o.Until)) {
			return false
		}
		return (e.Stream == StreamStdout && o.Stdout) || (e.Stream == StreamStderr && o.Stderr)
	}
	br := bufio.NewReader(f)
	var offset int64
	// readAvailable returns the complete entries now in the file, rewinding
	// past a partial one so the next call sees it whole.
	readAvailable := func() ([]LogEntry, error) {
		var out []LogEntry
		for {
			e, n, err := readLogEntry(br)
			if err == io.EOF {
				if _, serr := f.Seek(offset, io.SeekStart); serr != nil {
					return out, serr
				}
				br.Reset(f)
				return out, nil
			}
			if err != nil {
				return out, fmt.Errorf("%s: %w", c.Name, err)
			}
			offset += int64(n)
			if want(e) {
				out = append(out, e)
			}
		}
	}
	first, err := readAvailable()
	if err != nil {
		return err
	}
	if o.Tail >= 0 && len(first) > o.Tail {
		first = first[len(first)-o.Tail:]
	}
	for _, e := range first {
		if err := emit(e); err != nil {
			return err
		}
	}
	if t == nil {
		return nil
	}
	for {
		if !o.Until.IsZero() && time.Now().After(o.Until) {
			return nil // nothing later can be wanted
		}
		// The run's end is checked before the read, so the last read after
		// it sees everything the run wrote.
		ended := false
		select {
		case <-t.outputDone:
			ended = true
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		more, err := readAvailable()
		if err != nil {
			return err
		}
		for _, e := range more {
			if err := emit(e); err != nil {
				return err
			}
		}
		if ended {
			// Return once the exit is recorded, as docker logs -f does: a
			// client that inspects the container next sees it exited.
			select {
			case <-t.done:
			case <-ctx.Done():
				return ctx.Err()
			}
			return nil
		}
	}
}

func waitForLog(ctx context.Context, t *task, path string) (*os.File, error) {
	for {
		f, err := os.Open(path)
		if err == nil {
			return f, nil
		}
		select {
		case <-t.outputDone:
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
