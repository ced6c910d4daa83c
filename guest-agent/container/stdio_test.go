package container

import (
	"errors"
	"testing"
)

// TestReadRetry checks the offset contract of output reads: a lost answer
// can be asked for again (whole or from inside, for a host that kept part
// of it), and only the pending chunk or new data can be.
func TestReadRetry(t *testing.T) {
	s, err := newStdio(false, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	stdout := s.child[1]
	write := func(b string) {
		t.Helper()
		if _, err := stdout.Write([]byte(b)); err != nil {
			t.Fatal(err)
		}
	}
	type step struct {
		offset  uint64
		want    string
		wantAt  uint64
		wantErr bool
	}
	write("hello")
	for i, st := range []step{
		{offset: 3, wantErr: true}, // nothing sent yet: only 0 is valid
		{offset: 0, want: "hel", wantAt: 0},
		{offset: 0, want: "hel", wantAt: 0}, // lost answer: sent again
		{offset: 1, want: "el", wantAt: 1},  // part of the chunk kept: the rest
		{offset: 0, want: "hel", wantAt: 0}, // still pending as a whole
		{offset: 2, want: "l", wantAt: 2},
		{offset: 4, wantErr: true},         // beyond what was sent
		{offset: 3, want: "lo", wantAt: 3}, // acknowledged: new data
		{offset: 3, want: "lo", wantAt: 3},
		{offset: 0, wantErr: true}, // acknowledged bytes are gone
	} {
		max := 3
		data, at, eof, err := s.read(Stdout, max, st.offset)
		if st.wantErr {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("step %d: read at %d = %q, %v; want ErrInvalid", i, st.offset, data, err)
			}
			continue
		}
		if err != nil || eof || string(data) != st.want || at != st.wantAt {
			t.Fatalf("step %d: read at %d = %q at %d eof %v, %v; want %q at %d", i, st.offset, data, at, eof, err, st.want, st.wantAt)
		}
	}
	s.closeChild()
	data, at, eof, err := s.read(Stdout, 3, 5)
	if err != nil || !eof || len(data) != 0 || at != 5 {
		t.Fatalf("read at end = %q at %d eof %v, %v; want EOF at 5", data, at, eof, err)
	}
	// The EOF answer can be lost too.
	if _, _, eof, err := s.read(Stdout, 3, 5); err != nil || !eof {
		t.Fatalf("repeated read at end: eof %v, %v", eof, err)
	}
}
