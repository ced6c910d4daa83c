package containersvc

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

// readAll reads a log file's entries forwards, checking that reading it
// backwards gives the same entries.
func readAll(t *testing.T, path string) []entry {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	var fwd []entry
	for pos := int64(len(logMagic)); ; {
		e, err := readEntryAt(f, pos, fi.Size())
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		fwd = append(fwd, e)
		pos = e.end
	}
	var back []entry
	for pos := fi.Size(); ; {
		e, err := readEntryBefore(f, pos)
		if err != nil {
			break
		}
		back = append([]entry{e}, back...)
		pos = e.start
	}
	if len(back) != len(fwd) {
		t.Fatalf("%d entries read forwards, %d backwards", len(fwd), len(back))
	}
	return fwd
}

// Entries are chunks as written (not lines), with their stream, time and
// the stream's run offset at their end, readable both ways.
func TestLogRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), logFileName)
	w, err := openLog(path, [3]uint64{StreamStdout: 10}, LogLimits{})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Unix(100, 5).UTC()
	for _, c := range []struct {
		s Stream
		d string
	}{{StreamStdout, "a\nb\nc"}, {StreamStderr, "\x00\xff\n"}, {StreamStdout, "d\n"}} {
		if err := w.write(c.s, at, []byte(c.d)); err != nil {
			t.Fatal(err)
		}
	}
	w.close()
	got := readAll(t, path)
	want := []struct {
		s   Stream
		d   string
		off uint64
	}{{StreamStdout, "a\nb\nc", 15}, {StreamStderr, "\x00\xff\n", 3}, {StreamStdout, "d\n", 17}}
	if len(got) != len(want) {
		t.Fatalf("%d entries, want %d", len(got), len(want))
	}
	for i, e := range got {
		if e.Stream != want[i].s || string(e.Data) != want[i].d || e.off != want[i].off || !e.Time.Equal(at) {
			t.Errorf("entry %d = %d %q off %d at %v, want %+v", i, e.Stream, e.Data, e.off, e.Time, want[i])
		}
	}
	if lines := logLines([]byte("a\nb\nc")); len(lines) != 3 || string(lines[2]) != "c" || countLines([]byte("a\nb\nc")) != 3 || countLines([]byte("x\n")) != 1 {
		t.Errorf("logLines = %q", lines)
	}
}

func TestReadEntryBadInput(t *testing.T) {
	path := filepath.Join(t.TempDir(), logFileName)
	w, err := openLog(path, [3]uint64{}, LogLimits{})
	if err != nil {
		t.Fatal(err)
	}
	w.write(StreamStdout, time.Now(), []byte("hello\n"))
	w.close()
	good, _ := os.ReadFile(path)
	for _, tc := range []struct {
		name string
		edit func(b []byte) []byte
		want error
	}{
		{"bad stream", func(b []byte) []byte { b[8] = 9; return b }, errLogCorrupt},
		{"reserved bytes", func(b []byte) []byte { b[9] = 1; return b }, errLogCorrupt},
		{"huge length", func(b []byte) []byte { b[12] = 0xff; return b }, errLogCorrupt},
		{"trailer differs", func(b []byte) []byte { b[len(b)-1]++; return b }, errLogCorrupt},
		{"cut short", func(b []byte) []byte { return b[:len(b)-2] }, io.EOF},
	} {
		b := tc.edit(append([]byte(nil), good...))
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		f, _ := os.Open(path)
		_, err := readEntryAt(f, int64(len(logMagic)), int64(len(b)))
		f.Close()
		if err != tc.want {
			t.Errorf("%s: readEntryAt = %v, want %v", tc.name, err, tc.want)
		}
	}
}

// Past max-size the log rotates, keeping max-file files; what remains is
// the newest output, in order, and Logs reads it across the files.
func TestLogRotation(t *testing.T) {
	f := newBootFixture(t)
	c, err := f.svc.Create(context.Background(), CreateOptions{Image: "busybox", Name: "rot",
		LogOptions: map[string]string{"max-size": "1k", "max-file": "3"}})
	if err != nil {
		t.Fatal(err)
	}
	if c.Config.LogMaxSize != 1000 || c.Config.LogMaxFiles != 3 {
		t.Fatalf("limits recorded: %d x %d", c.Config.LogMaxSize, c.Config.LogMaxFiles)
	}
	path := filepath.Join(f.svc.cfg.Store.Dir(c.ID), logFileName)
	w, err := openLog(path, [3]uint64{}, f.svc.logLimits(c))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		if err := w.write(StreamStdout, time.Unix(int64(i), 0), []byte(fmt.Sprintf("line %03d\n", i))); err != nil {
			t.Fatal(err)
		}
	}
	w.close()
	files := logFiles(path)
	if len(files) != 3 {
		t.Fatalf("log files %v, want 3", files)
	}
	for _, name := range files {
		if fi, _ := os.Stat(name); fi.Size() > 1000 {
			t.Errorf("%s has %d bytes, more than max-size", name, fi.Size())
		}
	}
	var got []string
	if err := f.svc.Logs(context.Background(), c.ID, LogsOptions{Stdout: true, Tail: -1}, func(e LogEntry) error {
		got = append(got, string(e.Data))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) == 0 || got[len(got)-1] != "line 199\n" || len(got) > 200 {
		t.Fatalf("logs after rotation: %d lines ending %q", len(got), got[len(got)-1:])
	}
	for i := 1; i < len(got); i++ {
		if got[i] <= got[i-1] {
			t.Fatalf("lines out of order: %q after %q", got[i], got[i-1])
		}
	}
	for _, opts := range []map[string]string{{"max-size": "lots"}, {"max-size": "-1", "max-file": "2"}, {"compress": "true"}, {"max-file": "0", "max-size": "1m"}} {
		if _, err := f.svc.Create(context.Background(), CreateOptions{Image: "busybox", LogOptions: opts}); !errdefs.IsInvalidArgument(err) {
			t.Errorf("log options %v: %v, want invalid argument", opts, err)
		}
	}
}

// A log of an earlier version (a 16-byte header per line, no magic) is
// rewritten when opened, keeping its lines and the run's offsets.
func TestLogV1Converted(t *testing.T) {
	path := filepath.Join(t.TempDir(), logFileName)
	var v1 []byte
	for _, l := range []struct {
		s Stream
		d string
	}{{StreamStdout, "one\n"}, {StreamStderr, "two\n"}, {StreamStdout, "three\n"}} {
		h := make([]byte, logV1HeaderLen)
		h[0] = byte(l.s)
		binary.BigEndian.PutUint32(h[4:], uint32(len(l.d)))
		binary.BigEndian.PutUint64(h[8:], uint64(time.Unix(50, 0).UnixNano()))
		v1 = append(append(v1, h...), l.d...)
	}
	if err := os.WriteFile(path, v1, 0o600); err != nil {
		t.Fatal(err)
	}
	off, err := logOffsets(path, time.Unix(0, 0))
	if err != nil || off != [3]uint64{StreamStdout: 10, StreamStderr: 4} {
		t.Fatalf("offsets of the v1 log = %v, %v", off, err)
	}
	w, err := openLog(path, off, LogLimits{})
	if err != nil {
		t.Fatal(err)
	}
	w.write(StreamStdout, time.Unix(60, 0), []byte("four\n"))
	w.close()
	var got []string
	for _, e := range readAll(t, path) {
		got = append(got, fmt.Sprintf("%d %s %d", e.Stream, strings.TrimSpace(string(e.Data)), e.off))
	}
	if want := []string{"1 one 4", "2 two 4", "1 three 10", "1 four 15"}; !slices.Equal(got, want) {
		t.Errorf("converted log = %q, want %q", got, want)
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
	w, err := openLog(path, [3]uint64{}, LogLimits{})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Unix(1000, 0)
	if err := w.write(StreamStdout, start.Add(-time.Second), []byte("earlier run\n")); err != nil {
		t.Fatal(err)
	}
	w.close()
	// The next run's writer starts its streams at 0.
	if w, err = openLog(path, [3]uint64{}, LogLimits{}); err != nil {
		t.Fatal(err)
	}
	for _, e := range []struct {
		stream Stream
		at     time.Time
		data   string
	}{
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
	if err := os.WriteFile(path, []byte(logMagic+"not a log, long enough for a header"), 0o600); err != nil {
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
	for _, cut := range []int{1, logEntryHead - 1, logEntryHead, logEntryHead + 3, logEntryHead + len("torn line\n")} {
		path := filepath.Join(t.TempDir(), logFileName)
		w, err := openLog(path, [3]uint64{}, LogLimits{})
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
		w, err = openLog(path, off, LogLimits{})
		if err != nil {
			t.Fatal(err)
		}
		if err := w.write(StreamStdout, start, []byte("torn line\nnext\n")); err != nil {
			t.Fatal(err)
		}
		w.close()
		var got []string
		for _, e := range readAll(t, path) {
			got = append(got, string(e.Data))
		}
		if want := []string{"kept\n", "torn line\nnext\n"}; !slices.Equal(got, want) {
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
	w, err := openLog(path, [3]uint64{}, LogLimits{})
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
	if want := len(logMagic) + logEntryHead + len("kept\n") + logEntryTail; len(b) != want {
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
	w, err := openLog(filepath.Join(f.svc.cfg.Store.Dir(c.ID), logFileName), [3]uint64{}, LogLimits{})
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

// FuzzLogFile: a damaged or hostile log file is read forwards and
// backwards without a panic or an endless loop, and every entry read lies
// inside the file.
func FuzzLogFile(f *testing.F) {
	path := filepath.Join(f.TempDir(), logFileName)
	w, err := openLog(path, [3]uint64{}, LogLimits{})
	if err != nil {
		f.Fatal(err)
	}
	w.write(StreamStdout, time.Unix(1, 0), []byte("a\nb\n"))
	w.write(StreamStderr, time.Unix(2, 0), []byte("c"))
	w.close()
	good, _ := os.ReadFile(path)
	f.Add(good[len(logMagic):])
	f.Add([]byte{1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, body []byte) {
		p := filepath.Join(t.TempDir(), logFileName)
		if err := os.WriteFile(p, append([]byte(logMagic), body...), 0o600); err != nil {
			t.Fatal(err)
		}
		fh, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer fh.Close()
		size := int64(len(logMagic) + len(body))
		end, err := logEnd(fh, size)
		if err != nil {
			return
		}
		if end > size || end < int64(len(logMagic)) {
			t.Fatalf("logEnd = %d of %d", end, size)
		}
		for pos, n := end, 0; n <= len(body); n++ {
			e, err := readEntryBefore(fh, pos)
			if err != nil {
				break
			}
			if e.start >= pos || e.start < int64(len(logMagic)) {
				t.Fatalf("entry before %d starts at %d", pos, e.start)
			}
			pos = e.start
		}
		if _, _, _, err := logStart([]*os.File{fh}, LogsOptions{Tail: 1, Stdout: true, Stderr: true}, func(LogEntry) bool { return true }); err != nil {
			return
		}
	})
}
