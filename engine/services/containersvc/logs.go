package containersvc

import (
	"context"
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

// Logs calls emit for each line of the container's stored output, oldest
// first. --tail and --since start from the end of the log and read no
// more of it than they return. An error from emit (the client went away)
// ends Logs with it.
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
	path := filepath.Join(s.cfg.Store.Dir(c.ID), logFileName)
	if v, err := logVersion(path); err == nil && v == 1 {
		if err := convertLogV1(path, [3]uint64{}); err != nil {
			return err
		}
	}
	if len(logFiles(path)) == 0 {
		if t == nil {
			return nil // never started: no output yet
		}
		// Started but the log is not open yet: wait for the run to write it.
		if ok, err := waitForLog(ctx, t, path); !ok {
			return err
		}
	}
	// The files as they are now: a rotation while they are read renames
	// them, and open descriptors keep reading what they were.
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for _, name := range logFiles(path) {
		f, err := os.Open(name)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // rotated out meanwhile
			}
			return fmt.Errorf("container log: %w", err)
		}
		files = append(files, f)
	}
	if len(files) == 0 {
		return nil
	}
	want := func(e LogEntry) bool {
		if (!o.Since.IsZero() && e.Time.Before(o.Since)) || (!o.Until.IsZero() && e.Time.After(o.Until)) {
			return false
		}
		return (e.Stream == StreamStdout && o.Stdout) || (e.Stream == StreamStderr && o.Stderr)
	}
	cur, pos, skip, err := logStart(files, o, want)
	if err != nil {
		return fmt.Errorf("%s: %w", c.Name, err)
	}
	// readAvailable emits the complete entries of files[cur] from pos.
	readAvailable := func() error {
		f := files[cur]
		fi, err := f.Stat()
		if err != nil {
			return fmt.Errorf("container log: %w", err)
		}
		for {
			e, err := readEntryAt(f, pos, fi.Size())
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return fmt.Errorf("%s: %w", c.Name, err)
			}
			pos = e.end
			if !want(e.LogEntry) {
				continue
			}
			lines := logLines(e.Data)
			if skip > 0 {
				n := min(skip, len(lines))
				lines, skip = lines[n:], skip-n
			}
			for _, l := range lines {
				if err := emit(LogEntry{Stream: e.Stream, Time: e.Time, Data: l}); err != nil {
					return err
				}
			}
		}
	}
	for {
		if err := readAvailable(); err != nil {
			return err
		}
		if cur == len(files)-1 {
			break
		}
		cur, pos = cur+1, int64(len(logMagic))
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
		if err := readAvailable(); err != nil {
			return err
		}
		// Rotated: what the old file holds is read; go on with the new.
		if next, err := os.Open(path); err == nil {
			if sameFile(next, files[cur]) {
				next.Close()
			} else {
				files = append(files, next)
				cur, pos = len(files)-1, int64(len(logMagic))
				if err := readAvailable(); err != nil {
					return err
				}
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

// logStart finds where Logs starts: the file, the entry in it and how many
// of that entry's lines to skip, reading the log backwards from its end
// for --tail (lines of wanted entries) and --since (entries are in time
// order).
func logStart(files []*os.File, o LogsOptions, want func(LogEntry) bool) (file int, pos int64, skip int, err error) {
	if o.Tail < 0 && o.Since.IsZero() {
		return 0, int64(len(logMagic)), 0, nil
	}
	count := 0
	for i := len(files) - 1; i >= 0; i-- {
		fi, err := files[i].Stat()
		if err != nil {
			return 0, 0, 0, fmt.Errorf("container log: %w", err)
		}
		end, err := logEnd(files[i], fi.Size())
		if err != nil {
			return 0, 0, 0, err
		}
		for p := end; ; {
			e, err := readEntryBefore(files[i], p)
			if err != nil {
				break // the start of the file
			}
			p = e.start
			if !o.Since.IsZero() && e.Time.Before(o.Since) {
				return i, e.end, 0, nil
			}
			if o.Tail >= 0 && want(e.LogEntry) {
				n := countLines(e.Data)
				if count+n >= o.Tail {
					return i, e.start, count + n - o.Tail, nil
				}
				count += n
			}
		}
	}
	return 0, int64(len(logMagic)), 0, nil
}

// sameFile reports whether a and b are one file.
func sameFile(a, b *os.File) bool {
	ai, err1 := a.Stat()
	bi, err2 := b.Stat()
	return err1 == nil && err2 == nil && os.SameFile(ai, bi)
}

func waitForLog(ctx context.Context, t *task, path string) (bool, error) {
	for {
		if _, err := os.Stat(path); err == nil {
			return true, nil
		}
		select {
		case <-t.outputDone:
			return false, nil
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
