package sandbox

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// BinaryKey names a VMM binary by path and identity: another file at the
// path (an upgrade) or a change to it gets another key.
func BinaryKey(bin string) (string, error) {
	var st unix.Stat_t
	if err := unix.Stat(bin, &st); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s|%d:%d|%d|%d.%09d", bin, st.Dev, st.Ino, st.Size, st.Ctim.Sec, st.Ctim.Nsec), nil
}

// HostCPUSignature digests the first CPU's model and flags: a state saved
// under hardware virtualization carries that CPU's features.
func HostCPUSignature() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	h := sha256.New()
	for _, line := range strings.Split(string(b), "\n") {
		k, _, _ := strings.Cut(line, ":")
		switch strings.TrimSpace(k) {
		case "vendor_id", "cpu family", "model", "model name", "stepping", "flags":
			h.Write([]byte(line + "\n"))
		case "":
			if strings.TrimSpace(line) == "" {
				return hex.EncodeToString(h.Sum(nil))[:16]
			}
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}
