package containersvc

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
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
