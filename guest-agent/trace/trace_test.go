package trace

import (
	"strings"
	"testing"
)

func TestStepRecordsOnlyWhenEnabled(t *testing.T) {
	t.Cleanup(func() { Enable(false); Take() })
	Enable(false)
	Step("off")
	if got := Take(); len(got) != 0 {
		t.Fatalf("Take() after a disabled Step = %v, want nothing", got)
	}
	Enable(true)
	Step("a")
	Add(Mark{Name: "b", At: 1})
	got := Take()
	if len(got) != 2 || got[0].Name != "a" || got[0].At <= 0 || got[1] != (Mark{Name: "b", At: 1}) {
		t.Fatalf("Take() = %v, want a (now) and b at 1", got)
	}
	if again := Take(); len(again) != 0 {
		t.Errorf("second Take() = %v, want nothing", again)
	}
}

func TestTable(t *testing.T) {
	tests := []struct {
		name  string
		marks []Mark
		want  string
	}{
		{"empty", nil, ""},
		{"in time order, deltas from the previous mark",
			[]Mark{{"second", 3_500_000}, {"first", 1_000_000}, {"third", 3_500_000}},
			"trace       1.0 ms     +0.0 ms  first\n" +
				"trace       3.5 ms     +2.5 ms  second\n" +
				"trace       3.5 ms     +0.0 ms  third\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Table(tt.marks); got != tt.want {
				t.Errorf("Table(%v) =\n%s\nwant\n%s", tt.marks, got, tt.want)
			}
		})
	}
}

func TestNowIsMonotonic(t *testing.T) {
	a := Now()
	b := Now()
	if a <= 0 || b < a {
		t.Errorf("Now() = %d then %d, want positive and not decreasing", a, b)
	}
	if !strings.HasPrefix(Table([]Mark{{"x", a}}), "trace ") {
		t.Error("Table lines start with \"trace \"")
	}
}
