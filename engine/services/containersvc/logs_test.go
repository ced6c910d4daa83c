package containersvc

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestLogRoundTrip(t *testing.T) {
	tests := []struct {
		name   string
		stream Stream
		data   string
		want   []string // entries read back
	}{
		{"one line", StreamStdout, "hi\n", []string{"hi\n"}},
		{"split at newlines", StreamStderr, "a\nb\nc", []string{"a\n", "b\n", "c"}},
		{"binary", StreamStdout, "\x00\xff\n", []string{"\x00\xff\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), logFileName)
			w, err := openLog(path)
			if err != nil {
				t.Fatal(err)
			}
			at := time.Unix(100, 5).UTC()
			if err := w.write(tt.stream, at, []byte(tt.data)); err != nil {
				t.Fatal(err)
			}
			w.close()
			b, _ := os.ReadFile(path)
			r := bytes.NewReader(b)
			var got []string
			for {
				e, _, err := readLogEntry(r)
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if e.Stream != tt.stream || !e.Time.Equal(at) {
					t.Errorf("entry stream %d time %v, want %d %v", e.Stream, e.Time, tt.stream, at)
				}
				got = append(got, string(e.Data))
			}
			if len(got) != len(tt.want) {
				t.Fatalf("entries = %q, want %q", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("entry %d = %q, want %q", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestReadLogEntryBadInput(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, io.EOF},
		{"short header", []byte{1, 0, 0}, io.EOF},
		{"bad stream", []byte{9, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 'x'}, errLogCorrupt},
		{"huge length", []byte{1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0}, errLogCorrupt},
		{"partial data", []byte{1, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 'a'}, io.EOF},
	}
	for _, tt := range tests {
		if _, _, err := readLogEntry(bytes.NewReader(tt.in)); err != tt.want {
			t.Errorf("%s: readLogEntry = %v, want %v", tt.name, err, tt.want)
		}
	}
}

func TestParseSignalAndWaitCondition(t *testing.T) {
	for in, want := range map[string]int{"TERM": 15, "sigkill": 9, "9": 9, "SIGHUP": 1} {
		if got, err := ParseSignal(in); err != nil || int(got) != want {
			t.Errorf("ParseSignal(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "NOPE", "0", "65", "-1"} {
		if _, err := ParseSignal(bad); err == nil {
			t.Errorf("ParseSignal(%q) succeeded, want an error", bad)
		}
	}
	for in, want := range map[string]WaitCondition{"": WaitNotRunning, "next-exit": WaitNextExit, "removed": WaitRemoved} {
		if got, err := ParseWaitCondition(in); err != nil || got != want {
			t.Errorf("ParseWaitCondition(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseWaitCondition("later"); err == nil {
		t.Errorf("ParseWaitCondition(later) succeeded")
	}
}

// TestLogOffsets checks where an adopted run's pumps resume: the bytes of
// each stream logged since the run started, earlier runs not counted.
func TestLogOffsets(t *testing.T) {
	path := filepath.Join(t.TempDir(), logFileName)
	if off, err := logOffsets(path, time.Now()); err != nil || off != [3]uint64{} {
		t.Fatalf("missing log: %v, %v; want zero offsets", off, err)
	}
	w, err := openLog(path)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Unix(1000, 0)
	for _, e := range []struct {
		stream Stream
		at     time.Time
		data   string
	}{
		{StreamStdout, start.Add(-time.Second), "earlier run\n"},
		{StreamStdout, start, "ab\ncd"},
		{StreamStderr, start.Add(time.Second), "oops\n"},
		{StreamStdout, start.Add(2 * time.Second), "e"},
	} {
		if err := w.write(e.stream, e.at, []byte(e.data)); err != nil {
			t.Fatal(err)
		}
	}
	w.close()
	off, err := logOffsets(path, start)
	if err != nil {
		t.Fatal(err)
	}
	if want := [3]uint64{StreamStdout: 6, StreamStderr: 5}; off != want {
		t.Errorf("offsets = %v, want %v", off, want)
	}
	if err := os.WriteFile(path, []byte("not a log, long enough for a header"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := logOffsets(path, start); err == nil {
		t.Error("a corrupt log gave offsets")
	}
}

// TestLogOffsetsTornTail checks that a log whose last entry was cut short
// (its writer was killed mid-write) resumes cleanly: the partial entry's
// bytes are not counted, and entries appended afterwards read back intact.
func TestLogOffsetsTornTail(t *testing.T) {
	start := time.Unix(1000, 0)
	for _, cut := range []int{1, logHeaderLen - 1, logHeaderLen, logHeaderLen + 3} {
		path := filepath.Join(t.TempDir(), logFileName)
		w, err := openLog(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.write(StreamStdout, start, []byte("kept\n")); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		whole := fi.Size()
		if err := w.write(StreamStdout, start, []byte("torn line\n")); err != nil {
			t.Fatal(err)
		}
		w.close()
		if err := os.Truncate(path, whole+int64(cut)); err != nil {
			t.Fatal(err)
		}

		off, err := logOffsets(path, start)
		if err != nil || off != [3]uint64{StreamStdout: 5} {
			t.Fatalf("cut %d: logOffsets = %v, %v; want 5 stdout bytes", cut, off, err)
		}
		w, err = openLog(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.write(StreamStdout, start, []byte("torn line\nnext\n")); err != nil {
			t.Fatal(err)
		}
		w.close()
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		r := bufio.NewReader(f)
		for {
			e, _, err := readLogEntry(r)
			if err != nil {
				if err != io.EOF {
					t.Errorf("cut %d: %v", cut, err)
				}
				break
			}
			got = append(got, string(e.Data))
		}
		f.Close()
		if want := []string{"kept\n", "torn line\n", "next\n"}; !slices.Equal(got, want) {
			t.Errorf("cut %d: log after resuming = %q, want %q", cut, got, want)
		}
	}
}

// TestLogWriteFullDisk checks that an entry the file system had no room for
// leaves no half entry behind for the next run to append after.
func TestLogWriteFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("not root: a full file system is made with a small tmpfs mount")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=8k"); err != nil {
		t.Skipf("cannot mount a tmpfs: %v", err)
	}
	defer syscall.Unmount(dir, 0)
	path := filepath.Join(dir, logFileName)
	w, err := openLog(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.write(StreamStdout, time.Now(), []byte("kept\n")); err != nil {
		t.Fatal(err)
	}
	if err := w.write(StreamStdout, time.Now(), bytes.Repeat([]byte("x"), 16<<10)); err == nil {
		t.Fatal("a 16 KiB entry fit in an 8 KiB file system")
	}
	w.close()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := logHeaderLen + len("kept\n"); len(b) != want {
		t.Errorf("log after the failed write has %d bytes, want %d (the complete entry only)", len(b), want)
	}
}

// docker logs --since/--until keep the entries written in the window;
// --tail counts among them.
func TestLogsSinceUntil(t *testing.T) {
	f := newBootFixture(t)
	c, err := f.svc.Create(context.Background(), CreateOptions{Image: "busybox", Name: "l"})
	if err != nil {
		t.Fatal(err)
	}
	w, err := openLog(filepath.Join(f.svc.cfg.Store.Dir(c.ID), logFileName))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []int64{100, 200, 300} {
		if err := w.write(StreamStdout, time.Unix(s, 0), []byte(fmt.Sprintf("at %d\n", s))); err != nil {
			t.Fatal(err)
		}
	}
	w.close()
	read := func(o LogsOptions) string {
		o.Stdout, o.Stderr = true, true
		if o.Tail == 0 {
			o.Tail = -1
		}
		var out []string
		err := f.svc.Logs(context.Background(), c.ID, o, func(e LogEntry) error { out = append(out, string(e.Data)); return nil })
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(out, "")
	}
	for _, tc := range []struct {
		o    LogsOptions
		want string
	}{
		{LogsOptions{Since: time.Unix(150, 0)}, "at 200\nat 300\n"},
		{LogsOptions{Until: time.Unix(250, 0)}, "at 100\nat 200\n"},
		{LogsOptions{Since: time.Unix(150, 0), Until: time.Unix(250, 0)}, "at 200\n"},
		{LogsOptions{Since: time.Unix(200, 0), Tail: 1}, "at 300\n"},
		{LogsOptions{Since: time.Unix(400, 0)}, ""},
	} {
		if got := read(tc.o); got != tc.want {
			t.Errorf("since %v until %v tail %d: %q, want %q", tc.o.Since.Unix(), tc.o.Until.Unix(), tc.o.Tail, got, tc.want)
		}
	}
}
