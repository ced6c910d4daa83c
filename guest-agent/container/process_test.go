package container

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/vmctl/vmctl/guest-agent/reaper"
)

// TestProcessReleasesStdio checks that an ended process whose output was
// read to the end gives its stdio descriptors back, whichever comes last
// (the exit or the EOF reads), and that reads after that still answer EOF.
func TestProcessReleasesStdio(t *testing.T) {
	for _, exitFirst := range []bool{true, false} {
		s, err := newStdio(false, nil)
		if err != nil {
			t.Fatal(err)
		}
		p := newProcess("exec1", s, &cgroup{path: t.TempDir()})
		status := make(chan reaper.Status, 1)
		p.watch(status)
		if _, err := s.child[1].Write([]byte("out")); err != nil {
			t.Fatal(err)
		}
		s.closeChild()
		exit := func() {
			status <- reaper.Status{Pid: 1}
			if _, err := p.Wait(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		if exitFirst {
			exit()
		}
		if data, _, _, err := p.Read(Stdout, 0, 0); err != nil || string(data) != "out" {
			t.Fatalf("read stdout = %q, %v", data, err)
		}
		for _, st := range []struct {
			which Stream
			at    uint64
		}{{Stdout, 3}, {Stderr, 0}} {
			if _, _, eof, err := p.Read(st.which, 0, st.at); err != nil || !eof {
				t.Fatalf("read stream %d at %d: eof %v, %v; want EOF", st.which, st.at, eof, err)
			}
		}
		if !exitFirst {
			if _, err := s.out[Stdout].Stat(); err != nil {
				t.Fatalf("stdout released before the process exited: %v", err)
			}
			exit()
			// watch releases right after it closes exited, one file after
			// another; give it time to close them all.
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
				open := 0
				for _, f := range []*os.File{s.stdin, s.out[Stdout], s.out[Stderr]} {
					if _, err := f.Stat(); err == nil {
						open++
					}
				}
				if open == 0 {
					break
				}
			}
		}
		for i, f := range []*os.File{s.stdin, s.out[Stdout], s.out[Stderr]} {
			if _, err := f.Stat(); !errors.Is(err, os.ErrClosed) {
				t.Errorf("exit first %v: stdio file %d still open after exit and EOF (%v)", exitFirst, i, err)
			}
		}
		if _, _, eof, err := p.Read(Stdout, 0, 3); err != nil || !eof {
			t.Errorf("exit first %v: read after release: eof %v, %v; want EOF", exitFirst, eof, err)
		}
		s.close()
	}
}
