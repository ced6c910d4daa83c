package nested

import (
	"strings"
	"testing"
	"time"
)

func TestParseLine(t *testing.T) {
	tests := []struct {
		line string
		ok   bool
		want event
	}{
		{"NESTED-BOOT uptime=1.93", true, event{kind: "NESTED-BOOT", start: 1.93}},
		{"NESTED-BEGIN name=vmm-boot uptime=2.50", true, event{kind: "NESTED-BEGIN", name: "vmm-boot", start: 2.5}},
		{"NESTED-RESULT name=smoke status=pass start=2.01 end=2.30 detail=kvmsmoke: ok: api=12", true,
			event{kind: "NESTED-RESULT", name: "smoke", pass: true, start: 2.01, end: 2.3, detail: "kvmsmoke: ok: api=12"}},
		{"NESTED-RESULT name=x status=fail start=1 end=2 detail=", true,
			event{kind: "NESTED-RESULT", name: "x", start: 1, end: 2}},
		// The detail is free text, markers and '=' included.
		{"NESTED-RESULT name=x status=fail start=1 end=2 detail=a=b NESTED-DONE uptime=3", true,
			event{kind: "NESTED-RESULT", name: "x", start: 1, end: 2, detail: "a=b NESTED-DONE uptime=3"}},
		// A kernel message may share the line.
		{"[    3.1] kvm: something NESTED-DONE uptime=4.00", true, event{kind: "NESTED-DONE", start: 4}},
		{"NESTED-TIMEOUT uptime=90.1", true, event{kind: "NESTED-TIMEOUT", start: 90.1}},
		{"plain console output", false, event{}},
		{"NESTED-RESULT name=x status=maybe start=1 end=2 detail=", false, event{}},
		{"NESTED-RESULT name=x status=pass start=1 end=2", false, event{}},
		{"NESTED-RESULT name=x status=pass start=one end=2 detail=", false, event{}},
		{"NESTED-RESULT name=a/b status=pass start=1 end=2 detail=", false, event{}},
		{"NESTED-BEGIN name= uptime=1", false, event{}},
		{"NESTED-BOOT uptime=-1", false, event{}},
	}
	for _, tt := range tests {
		got, ok := parseLine(tt.line)
		if ok != tt.ok || ok && got != tt.want {
			t.Errorf("parseLine(%q) = %+v, %v, want %+v, %v", tt.line, got, ok, tt.want, tt.ok)
		}
	}
}

func TestValidName(t *testing.T) {
	for name, want := range map[string]bool{
		"smoke": true, "vmm-boot_2.1": true, "": false, ".hidden": false, "-x": false,
		"a b": false, "a/b": false, "a;b": false, "$(x)": false,
		"a1234567890123456789012345678901234567890123456789012345678901234": false,
	} {
		if got := validName(name); got != want {
			t.Errorf("validName(%q) = %v, want %v", name, got, want)
		}
	}
}

func FuzzParseLine(f *testing.F) {
	f.Add("NESTED-RESULT name=smoke status=pass start=2.01 end=2.30 detail=ok")
	f.Add("NESTED-BEGIN name=x uptime=1")
	f.Fuzz(func(t *testing.T, line string) {
		ev, ok := parseLine(line)
		if ok && ev.kind != "NESTED-BOOT" && ev.kind != "NESTED-DONE" && ev.kind != "NESTED-TIMEOUT" && !validName(ev.name) {
			t.Errorf("parseLine(%q) accepted invalid name %q", line, ev.name)
		}
	})
}

// A heartbeat echoed in the middle of a scenario's line (tee passes on
// half lines) is taken out, and the line is whole in the output.
func TestConsoleHeartbeatInsideLine(t *testing.T) {
	c := console{rep: &Report{}, start: time.Now(), onDone: func() {}}
	c.read(strings.NewReader("NESTED-BEGIN name=net uptime=1.0\n" +
		"L2-NET up features=0101NESTED-ALIVE uptime=2.5\n" +
		"1100 mtu=9000\n" +
		"last\n" +
		"NESTED-RESULT name=net status=pass start=1.0 end=3.0 detail=ok\n"))
	if len(c.rep.Results) != 1 {
		t.Fatalf("results = %+v", c.rep.Results)
	}
	if got, want := c.rep.Results[0].Output, "L2-NET up features=01011100 mtu=9000\nlast\n"; got != want {
		t.Errorf("output = %q, want %q", got, want)
	}
}
