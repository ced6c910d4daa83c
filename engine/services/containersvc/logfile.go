package containersvc

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	units "github.com/docker/go-units"
	"github.com/vmctl/vmctl/engine/containers"
	"github.com/vmctl/vmctl/engine/errs"
)

// A container's log is a file that starts with logMagic, followed by
// entries, each one chunk of one stream as the agent delivered it (split
// only at maxLogEntry), framed so that it can be read backwards as well as
// forwards: `docker logs --tail` and `--since` start from the end and read
// no more than they return.
//
//	offset 0   stream  (1 byte: 1 stdout, 2 stderr)
//	offset 1   zero    (3 bytes)
//	offset 4   length  (uint32 big-endian, at most maxLogEntry)
//	offset 8   time    (int64 big-endian, Unix nanoseconds)
//	offset 16  run offset (uint64 big-endian: the stream's bytes in this
//	           run up to the end of this entry, where re-adoption resumes)
//	offset 24  data    (length bytes)
//	then       length  (uint32 big-endian, again)
//
// A binary framing keeps every byte the container writes (a JSON string
// would not), and a chunk per entry keeps the overhead at 28 bytes per
// chunk, not per line: lines are found when the log is read.
//
// Files are rotated as docker's json-file driver rotates them
// (LogLimits: --log-opt max-size, max-file): stdio.log is the newest,
// stdio.log.1 the one before, and so on. A file of an earlier version
// (entries of 16-byte headers, one per line, no magic) is rewritten in
// this format when it is next opened.
const (
	logMagic     = "VMCTLLG2"
	logEntryHead = 24
	logEntryTail = 4
	maxLogEntry  = 1 << 20
	logFileName  = "stdio.log"
	// v1 (earlier versions): a 16-byte header per line.
	logV1HeaderLen = 16
)

// LogLimits bound a container's log as docker's json-file options do.
type LogLimits struct {
	// MaxSize is the most bytes one file holds; 0 is unbounded.
	MaxSize int64
	// MaxFiles is how many files are kept, the current one included.
	MaxFiles int
}

// DefaultLogLimits bound a log when neither the container nor the daemon
// says otherwise: docker's "local" driver's defaults, 5 files of 20 MB.
var DefaultLogLimits = LogLimits{MaxSize: 20 << 20, MaxFiles: 5}

// LogEntry is one chunk of a container's output.
type LogEntry struct {
	Stream Stream
	Time   time.Time
	Data   []byte
}

// logWriter appends entries to a container log. Not safe for concurrent
// use: the task serializes writes.
type logWriter struct {
	path   string
	f      *os.File
	size   int64     // the length of the file's complete entries
	off    [3]uint64 // the run's bytes of each stream so far
	limits LogLimits
}

// openLog opens the log at path for appending, the run's streams being at
// resume. A torn last entry (a writer killed mid-write) is cut off; a file
// of an earlier version is rotated away.
func openLog(path string, resume [3]uint64, limits LogLimits) (*logWriter, error) {
	if v, err := logVersion(path); err == nil && v == 1 {
		if err := convertLogV1(path, resume); err != nil {
			return nil, err
		}
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("container log: %w", err)
	}
	w := &logWriter{path: path, f: f, off: resume, limits: limits}
	if err := w.start(); err != nil {
		f.Close()
		return nil, err
	}
	return w, nil
}

// start writes the magic to a new file or finds the end of an existing one.
func (w *logWriter) start() error {
	fi, err := w.f.Stat()
	if err != nil {
		return fmt.Errorf("container log: %w", err)
	}
	if fi.Size() == 0 {
		if _, err := w.f.Write([]byte(logMagic)); err != nil {
			return fmt.Errorf("container log: %w", err)
		}
		w.size = int64(len(logMagic))
		return nil
	}
	end, err := logEnd(w.f, fi.Size())
	if err != nil {
		return fmt.Errorf("%w: %s", err, w.path)
	}
	if end < fi.Size() {
		if err := w.f.Truncate(end); err != nil {
			return fmt.Errorf("container log: cut off an incomplete entry: %w", err)
		}
	}
	w.size = end
	return nil
}

// write stores data as entries of at most maxLogEntry bytes. Each entry
// goes out in one write(2), so a concurrent reader sees whole entries or
// a short tail it skips.
func (w *logWriter) write(stream Stream, at time.Time, data []byte) error {
	for len(data) > 0 {
		n := min(len(data), maxLogEntry)
		size := int64(logEntryHead + n + logEntryTail)
		if w.limits.MaxSize > 0 && w.size+size > w.limits.MaxSize && w.size > int64(len(logMagic)) {
			if err := w.rotate(); err != nil {
				return err
			}
		}
		off := w.off[stream] + uint64(n)
		buf := make([]byte, size)
		buf[0] = byte(stream)
		binary.BigEndian.PutUint32(buf[4:], uint32(n))
		binary.BigEndian.PutUint64(buf[8:], uint64(at.UnixNano()))
		binary.BigEndian.PutUint64(buf[16:], off)
		copy(buf[logEntryHead:], data[:n])
		binary.BigEndian.PutUint32(buf[logEntryHead+n:], uint32(n))
		if _, err := w.f.Write(buf); err != nil {
			// A short write (a full disk) leaves half an entry, after
			// which every entry appended later would be read as part of
			// it: cut it off.
			w.f.Truncate(w.size)
			return fmt.Errorf("container log: %w", err)
		}
		w.size += size
		w.off[stream] = off
		data = data[n:]
	}
	return nil
}

// rotate starts a new file, keeping MaxFiles in all.
func (w *logWriter) rotate() error {
	w.f.Close()
	if err := rotateLogFiles(w.path, w.limits.MaxFiles); err != nil {
		return fmt.Errorf("container log: %w", err)
	}
	f, err := os.OpenFile(w.path, os.O_CREATE|os.O_RDWR|os.O_APPEND|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("container log: %w", err)
	}
	w.f = f
	if _, err := f.Write([]byte(logMagic)); err != nil {
		return fmt.Errorf("container log: %w", err)
	}
	w.size = int64(len(logMagic))
	return nil
}

func (w *logWriter) close() error { return w.f.Close() }

// rotateLogFiles moves path to path.1, path.1 to path.2 and so on, keeping
// keep files in all (path included): with keep 1 path is removed.
func rotateLogFiles(path string, keep int) error {
	keep = max(keep, 1)
	files := rotatedLogs(path)
	for i := len(files) - 1; i >= 0; i-- {
		n := files[i]
		if n+1 >= keep {
			if err := os.Remove(rotatedName(path, n)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
			continue
		}
		if err := os.Rename(rotatedName(path, n), rotatedName(path, n+1)); err != nil {
			return err
		}
	}
	if keep == 1 {
		err := os.Remove(path)
		if errors.Is(err, os.ErrNotExist) {
			err = nil
		}
		return err
	}
	err := os.Rename(path, rotatedName(path, 1))
	if errors.Is(err, os.ErrNotExist) {
		err = nil
	}
	return err
}

func rotatedName(path string, n int) string { return path + "." + strconv.Itoa(n) }

// rotatedLogs lists the numbers of path's rotated files, ascending (newest
// first).
func rotatedLogs(path string) []int {
	matches, _ := filepath.Glob(path + ".*")
	var out []int
	for _, m := range matches {
		if n, err := strconv.Atoi(strings.TrimPrefix(m, path+".")); err == nil && n > 0 {
			out = append(out, n)
		}
	}
	sort.Ints(out)
	return out
}

// logFiles lists a log's files, oldest first.
func logFiles(path string) []string {
	var out []string
	rot := rotatedLogs(path)
	for i := len(rot) - 1; i >= 0; i-- {
		out = append(out, rotatedName(path, rot[i]))
	}
	if _, err := os.Stat(path); err == nil {
		out = append(out, path)
	}
	return out
}

// logVersion tells a file of this format (2) from one of an earlier
// version (1); an empty file is of this one.
func logVersion(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var b [len(logMagic)]byte
	n, _ := io.ReadFull(f, b[:])
	if n == 0 || string(b[:n]) == logMagic[:n] {
		return 2, nil
	}
	return 1, nil
}

// errLogCorrupt means an entry makes no sense: the file was not written by
// logWriter, or was damaged.
var errLogCorrupt = errors.New("container log is corrupt")

// entry is one entry of a log file with where it lies.
type entry struct {
	LogEntry
	off        uint64 // the stream's run offset at its end
	start, end int64
}

// readEntryAt reads the entry at pos of a file of size bytes. io.EOF means
// no complete entry there (the end, or one being written).
func readEntryAt(f *os.File, pos, size int64) (entry, error) {
	if pos+logEntryHead+logEntryTail > size {
		return entry{}, io.EOF
	}
	var h [logEntryHead]byte
	if _, err := f.ReadAt(h[:], pos); err != nil {
		return entry{}, io.EOF
	}
	stream := Stream(h[0])
	n := int64(binary.BigEndian.Uint32(h[4:]))
	if (stream != StreamStdout && stream != StreamStderr) || h[1]|h[2]|h[3] != 0 || n > maxLogEntry {
		return entry{}, errLogCorrupt
	}
	end := pos + logEntryHead + n + logEntryTail
	if end > size {
		return entry{}, io.EOF
	}
	buf := make([]byte, n+logEntryTail)
	if _, err := f.ReadAt(buf, pos+logEntryHead); err != nil {
		return entry{}, io.EOF
	}
	if int64(binary.BigEndian.Uint32(buf[n:])) != n {
		return entry{}, errLogCorrupt
	}
	return entry{
		LogEntry: LogEntry{Stream: stream, Time: time.Unix(0, int64(binary.BigEndian.Uint64(h[8:]))).UTC(), Data: buf[:n]},
		off:      binary.BigEndian.Uint64(h[16:]), start: pos, end: end,
	}, nil
}

// readEntryBefore reads the entry that ends at end.
func readEntryBefore(f *os.File, end int64) (entry, error) {
	if end < int64(len(logMagic))+logEntryHead+logEntryTail {
		return entry{}, io.EOF
	}
	var t [logEntryTail]byte
	if _, err := f.ReadAt(t[:], end-logEntryTail); err != nil {
		return entry{}, errLogCorrupt
	}
	n := int64(binary.BigEndian.Uint32(t[:]))
	start := end - logEntryTail - n - logEntryHead
	if n > maxLogEntry || start < int64(len(logMagic)) {
		return entry{}, errLogCorrupt
	}
	e, err := readEntryAt(f, start, end)
	if err != nil || e.end != end {
		return entry{}, errLogCorrupt
	}
	return e, nil
}

// logEnd is where the last complete entry of a file of size bytes ends:
// size itself unless a writer died mid-entry, then found by reading the
// file forwards (only after such a death).
func logEnd(f *os.File, size int64) (int64, error) {
	var m [len(logMagic)]byte
	if _, err := f.ReadAt(m[:], 0); err != nil || string(m[:]) != logMagic {
		return 0, errLogCorrupt
	}
	if size == int64(len(logMagic)) {
		return size, nil
	}
	if _, err := readEntryBefore(f, size); err == nil {
		return size, nil
	}
	pos := int64(len(logMagic))
	for {
		e, err := readEntryAt(f, pos, size)
		if err == io.EOF {
			return pos, nil
		}
		if err != nil {
			return 0, err
		}
		pos = e.end
	}
}

// logOffsets returns how many bytes of each stream the log holds from
// entries written at or after since (the start of the current run), by
// Stream: where re-adoption resumes reading the agent. A missing log holds
// nothing. A torn last entry is cut off, so its bytes are read from the
// agent again.
func logOffsets(path string, since time.Time) ([3]uint64, error) {
	var off [3]uint64
	v, err := logVersion(path)
	if errors.Is(err, os.ErrNotExist) {
		return off, nil
	}
	if err != nil {
		return off, fmt.Errorf("container log: %w", err)
	}
	if v == 1 {
		return logOffsetsV1(path, since)
	}
	files := logFiles(path)
	found := [3]bool{}
	for i := len(files) - 1; i >= 0; i-- {
		f, err := os.OpenFile(files[i], os.O_RDWR, 0)
		if err != nil {
			return off, fmt.Errorf("container log: %w", err)
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return off, fmt.Errorf("container log: %w", err)
		}
		end, err := logEnd(f, fi.Size())
		if err != nil {
			f.Close()
			if i < len(files)-1 {
				return off, nil // an old file that is not ours: nothing more of this run
			}
			return off, fmt.Errorf("%w: %s", err, files[i])
		}
		if i == len(files)-1 && end < fi.Size() {
			if err := f.Truncate(end); err != nil {
				f.Close()
				return off, fmt.Errorf("container log: cut off an incomplete entry: %w", err)
			}
		}
		done := false
		for pos := end; !done; {
			e, err := readEntryBefore(f, pos)
			if err != nil {
				break
			}
			pos = e.start
			if e.Time.Before(since) {
				done = true
				break
			}
			if !found[e.Stream] {
				off[e.Stream], found[e.Stream] = e.off, true
			}
			done = found[StreamStdout] && found[StreamStderr]
		}
		f.Close()
		if done {
			break
		}
	}
	return off, nil
}

// logOffsetsV1 is logOffsets for a file of an earlier version.
func logOffsetsV1(path string, since time.Time) ([3]uint64, error) {
	var off [3]uint64
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return off, fmt.Errorf("container log: %w", err)
	}
	defer f.Close()
	r := bufio.NewReader(f)
	for {
		e, _, err := readLogEntryV1(r)
		if err == io.EOF {
			break
		}
		if err != nil {
			return off, fmt.Errorf("%w: %s", err, path)
		}
		if !e.Time.Before(since) {
			off[e.Stream] += uint64(len(e.Data))
		}
	}
	return off, nil
}

// readLogEntryV1 reads one entry of an earlier version's file.
func readLogEntryV1(r io.Reader) (LogEntry, int, error) {
	var h [logV1HeaderLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return LogEntry{}, 0, io.EOF
	}
	stream := Stream(h[0])
	n := binary.BigEndian.Uint32(h[4:])
	if (stream != StreamStdout && stream != StreamStderr) || h[1]|h[2]|h[3] != 0 || n > maxLogEntry {
		return LogEntry{}, 0, errLogCorrupt
	}
	data := make([]byte, n)
	if _, err := io.ReadFull(r, data); err != nil {
		return LogEntry{}, 0, io.EOF
	}
	at := time.Unix(0, int64(binary.BigEndian.Uint64(h[8:]))).UTC()
	return LogEntry{Stream: stream, Time: at, Data: data}, logV1HeaderLen + int(n), nil
}

// logLines splits a chunk into lines, each with its newline; a last line
// without one is a line too, as docker logs shows it.
func logLines(data []byte) [][]byte {
	var out [][]byte
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			out = append(out, data)
			break
		}
		out = append(out, data[:i+1])
		data = data[i+1:]
	}
	return out
}

// countLines is len(logLines(data)) without the slices.
func countLines(data []byte) int {
	n := bytes.Count(data, []byte{'\n'})
	if len(data) > 0 && data[len(data)-1] != '\n' {
		n++
	}
	return n
}

// convertLogV1 rewrites a file of an earlier version in this format. The
// run offsets are counted so that the last entry of each stream ends at
// resume, where the current run's writer goes on.
func convertLogV1(path string, resume [3]uint64) error {
	in, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("container log: %w", err)
	}
	defer in.Close()
	// First pass: each stream's bytes, to count the offsets back from
	// resume.
	var total [3]uint64
	r := bufio.NewReader(in)
	for {
		e, _, err := readLogEntryV1(r)
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("%w: %s", err, path)
		}
		total[e.Stream] += uint64(len(e.Data))
	}
	if _, err := in.Seek(0, io.SeekStart); err != nil {
		return err
	}
	tmp := path + ".convert"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("container log: %w", err)
	}
	defer os.Remove(tmp)
	bw := bufio.NewWriter(out)
	bw.WriteString(logMagic)
	var seen [3]uint64
	r.Reset(in)
	for {
		e, _, err := readLogEntryV1(r)
		if err != nil {
			break
		}
		seen[e.Stream] += uint64(len(e.Data))
		off := uint64(0)
		if left := total[e.Stream] - seen[e.Stream]; resume[e.Stream] >= left {
			off = resume[e.Stream] - left
		}
		n := len(e.Data)
		var h [logEntryHead]byte
		h[0] = byte(e.Stream)
		binary.BigEndian.PutUint32(h[4:], uint32(n))
		binary.BigEndian.PutUint64(h[8:], uint64(e.Time.UnixNano()))
		binary.BigEndian.PutUint64(h[16:], off)
		bw.Write(h[:])
		bw.Write(e.Data)
		var tl [logEntryTail]byte
		binary.BigEndian.PutUint32(tl[:], uint32(n))
		bw.Write(tl[:])
	}
	if err := bw.Flush(); err != nil {
		out.Close()
		return fmt.Errorf("container log: %w", err)
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return fmt.Errorf("container log: %w", err)
	}
	out.Close()
	return os.Rename(tmp, path)
}

// ParseLogOptions reads docker's json-file --log-opt options over the
// daemon's defaults: max-size (a size such as 10m; -1 for none) and
// max-file (a count, with max-size only). Other options are refused by
// name rather than ignored.
func ParseLogOptions(opts map[string]string, defaults LogLimits) (LogLimits, error) {
	l := defaults
	for k, v := range opts {
		switch k {
		case "max-size":
			if v == "-1" {
				l.MaxSize = 0
				continue
			}
			n, err := units.FromHumanSize(v)
			if err != nil || n <= 0 {
				return LogLimits{}, errs.New(errdefs.ErrInvalidArgument, "invalid log option max-size %q: want a size such as 10m, or -1", v)
			}
			l.MaxSize = n
		case "max-file":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return LogLimits{}, errs.New(errdefs.ErrInvalidArgument, "invalid log option max-file %q: want a number of files, at least 1", v)
			}
			l.MaxFiles = n
		default:
			return LogLimits{}, errs.New(errdefs.ErrInvalidArgument, "unknown log option %q: vmctl's log takes max-size and max-file", k)
		}
	}
	if _, ok := opts["max-file"]; ok && l.MaxSize == 0 {
		return LogLimits{}, errs.New(errdefs.ErrInvalidArgument, "invalid log options: max-file needs max-size")
	}
	l.MaxFiles = max(l.MaxFiles, 1)
	return l, nil
}

// logLimits are a container's log limits: its record's, or the daemon's
// defaults for a record of an earlier version.
func (s *Service) logLimits(c *containers.Container) LogLimits {
	if c.Config.LogMaxSize > 0 || c.Config.LogMaxFiles > 0 {
		return LogLimits{MaxSize: c.Config.LogMaxSize, MaxFiles: max(c.Config.LogMaxFiles, 1)}
	}
	return s.defaultLogLimits()
}

func (s *Service) defaultLogLimits() LogLimits {
	if s.cfg.LogLimits != nil {
		return *s.cfg.LogLimits
	}
	return DefaultLogLimits
}
