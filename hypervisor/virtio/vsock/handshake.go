package vsock

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// The hybrid handshake: the host writes "CONNECT <port>\n"; once the guest
// accepted, the device answers "OK <host port>\n" and the stream follows;
// otherwise it closes the connection without a word. internal/hybridvsock
// is the host-side client; client_test.go drives it against this device.

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

// okLine is the answer to a CONNECT the guest accepted, from hostPort.
func okLine(hostPort uint32) []byte {
	return []byte("OK " + strconv.FormatUint(uint64(hostPort), 10) + "\n")
}
