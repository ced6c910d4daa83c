package qemu

import (
	"encoding/json"
	"os"
	"sync"

	"github.com/vmctl/vmctl/engine/sandbox"
	"github.com/vmctl/vmctl/internal/atomicfile"
)

// Asking QEMU's -help which options drop privileges costs a process start
// (about 100 ms on a loaded machine, more under emulation), and every
// create and start of a container opens a driver. The answer depends only
// on the binary, so it is kept per binary: in this process, and across
// processes in a file where the engine names one (Options.ProbeCache, in
// its data root), so an in-process `vmctl run` does not pay it either.

// dropCache maps sandbox.BinaryKey -> privDrop.
var dropCache sync.Map

// cachedDrop is probeDrop, asked once per binary. file, if not empty,
// persists the answers (a JSON object of key -> privDrop); a missing or
// unreadable file only means asking QEMU.
func cachedDrop(bin, file string) privDrop {
	key, err := sandbox.BinaryKey(bin)
	if err != nil {
		return probeDrop(bin)
	}
	if v, ok := dropCache.Load(key); ok {
		return v.(privDrop)
	}
	var known map[string]privDrop
	if file != "" {
		known = readDropFile(file)
		if d, ok := known[key]; ok && (d == dropRunas || d == dropRunWith) {
			dropCache.Store(key, d)
			return d
		}
	}
	d := probeDrop(bin)
	if d == dropNone {
		return d // asked again next time: nothing to remember from a failed probe
	}
	dropCache.Store(key, d)
	if file != "" {
		known[key] = d
		_ = writeDropFile(file, known)
	}
	return d
}

func readDropFile(file string) map[string]privDrop {
	m := map[string]privDrop{}
	if b, err := os.ReadFile(file); err == nil {
		if json.Unmarshal(b, &m) != nil {
			m = map[string]privDrop{}
		}
	}
	return m
}

func writeDropFile(file string, m map[string]privDrop) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return atomicfile.Write(file, b, 0o600)
}
