package vsock

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// maxConnectLine bounds the host's handshake line.
const maxConnectLine = 64

// readConnect reads "CONNECT <port>\n" one byte at a time, so that nothing
// after the newline (stream data) is consumed.
func readConnect(r io.Reader) (uint32, error) {
	var line []byte
	var b [1]byte
	for {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, fmt.Errorf("reading the CONNECT line: %w", err)
		}
		if b[0] == '\n' {
			break
		}
		if len(line) == maxConnectLine {
			return 0, errors.New("CONNECT line too long")
		}
		line = append(line, b[0])
	}
	return parseConnect(strings.TrimSuffix(string(line), "\r"))
}

// parseConnect parses "CONNECT <port>" (without the newline).
func parseConnect(line string) (uint32, error) {
	arg, ok := strings.CutPrefix(line, "CONNECT ")
	if !ok {
		return 0, fmt.Errorf("handshake %q does not start with CONNECT", line)
	}
	port, err := strconv.ParseUint(strings.TrimSpace(arg), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("handshake %q: bad port: %w", line, err)
	}
	return uint32(port), nil
}
