package nested

import (
	"strconv"
	"strings"
	"time"
)

// The console protocol spoken by init.sh. Each marker may appear anywhere in
// a console line: a kernel message can land on the same line when both
// write at once.
const (
	markBoot    = "NESTED-BOOT "
	markBegin   = "NESTED-BEGIN "
	markResult  = "NESTED-RESULT "
	markDone    = "NESTED-DONE "
	markTimeout = "NESTED-TIMEOUT "
	markAlive   = "NESTED-ALIVE "
)

// KVMCheck is the name of the result init.sh reports for loading the KVM
// modules in L1 before any scenario; scenarios cannot use it.
const KVMCheck = "l1-kvm"

// event is one parsed protocol line.
type event struct {
	kind   string // markBoot etc., without the trailing space
	name   string
	pass   bool
	start  float64 // L1 uptime, seconds
	end    float64
	detail string
}

// parseLine finds a protocol marker in one console line (without its line
// ending). ok is false for ordinary console output and for a marker whose
// fields do not parse, which a test then sees as a missing result.
func parseLine(line string) (ev event, ok bool) {
	for _, m := range []string{markResult, markBegin, markBoot, markDone, markTimeout, markAlive} {
		i := strings.Index(line, m)
		if i < 0 {
			continue
		}
		ev.kind = strings.TrimSpace(m)
		rest := line[i+len(m):]
		switch m {
		case markResult:
			return parseResult(rest)
		case markBegin:
			f := fields(rest)
			ev.name = f["name"]
			ev.start, ok = seconds(f["uptime"])
			return ev, ok && validName(ev.name)
		default:
			ev.start, ok = seconds(fields(rest)["uptime"])
			return ev, ok
		}
	}
	return ev, false
}

// parseResult parses "name=N status=S start=T end=T detail=free text"; the
// detail runs to the end of the line and may contain anything.
func parseResult(rest string) (event, bool) {
	ev := event{kind: strings.TrimSpace(markResult)}
	head, detail, found := strings.Cut(rest, " detail=")
	if !found {
		return ev, false
	}
	f := fields(head)
	ev.name = f["name"]
	ev.detail = strings.TrimSpace(detail)
	var ok1, ok2 bool
	ev.start, ok1 = seconds(f["start"])
	ev.end, ok2 = seconds(f["end"])
	switch f["status"] {
	case "pass":
		ev.pass = true
	case "fail":
	default:
		return ev, false
	}
	return ev, ok1 && ok2 && validName(ev.name)
}

func fields(s string) map[string]string {
	out := map[string]string{}
	for _, kv := range strings.Fields(s) {
		if k, v, ok := strings.Cut(kv, "="); ok {
			out[k] = v
		}
	}
	return out
}

func seconds(s string) (float64, bool) {
	v, err := strconv.ParseFloat(s, 64)
	return v, err == nil && v >= 0
}

// uptime converts L1 uptime seconds to a duration.
func uptime(s float64) time.Duration {
	return time.Duration(s * float64(time.Second)).Round(time.Millisecond)
}

// validName accepts what init.sh can carry through the shell and the
// protocol unquoted: letters, digits, '-', '_', '.'.
func validName(n string) bool {
	if n == "" || len(n) > 64 || n[0] == '.' || n[0] == '-' {
		return false
	}
	for _, c := range n {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}
