package container

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/vmctl/vmctl/guest-agent/seccomp"
	"github.com/vmctl/vmctl/guest-agent/trace"
)

// The sync socket between the agent and a container init carries frames: a
// 4-byte big-endian payload length, then the payload, whose first byte is
// the message type. Fields are uvarints, varints and length-prefixed
// strings, in a fixed order.
//
// Why not JSON: every container init is a new process, and decoding the OCI
// spec there with encoding/json (reflection over the spec's types, cold heap
// and code pages) cost 15-20 ms of emulated CPU per container under QEMU
// TCG, about as much as pivot_root and all the container's mounts together.
// This decoder is a few hundred instructions per field.
const (
	msgConfig = 'C' // agent -> init: initConfig
	msgReady  = 'R' // init -> agent: set up, waiting for start; trace marks
	msgError  = 'E' // init -> agent: kind, message
	msgStart  = 'S' // agent -> init: exec the command
	// msgExec makes the re-exec an exec helper instead of an init:
	// agent --exec(config)--> helper; the helper joins the running
	// container and execs the process, which closes the socket, or sends
	// "error".
	msgExec = 'J'
)

// maxFrame bounds a frame; a config is a few KiB.
const maxFrame = 4 << 20

// errMalformed marks a frame that does not decode.
var errMalformed = errors.New("malformed sync message")

// syncMsg is one message on the sync socket, in either direction.
type syncMsg struct {
	Type byte
	Kind string       // msgError
	Msg  string       // msgError
	Cfg  initConfig   // msgConfig
	Mark []trace.Mark // msgReady: the init's step times (see trace)
}

func writeSync(w io.Writer, m syncMsg) error {
	e := wireEncoder{b: make([]byte, 4, 512)}
	e.b = append(e.b, m.Type)
	switch m.Type {
	case msgError:
		e.str(m.Kind)
		e.str(m.Msg)
	case msgReady:
		e.uint(uint64(len(m.Mark)))
		for _, mk := range m.Mark {
			e.str(mk.Name)
			e.int(mk.At)
		}
	case msgConfig, msgExec:
		e.config(m.Cfg)
	}
	if len(e.b)-4 > maxFrame {
		return fmt.Errorf("sync message of %d bytes is too large", len(e.b)-4)
	}
	binary.BigEndian.PutUint32(e.b, uint32(len(e.b)-4))
	_, err := w.Write(e.b)
	return err
}

// readSync reads one message; io.EOF means the peer closed the socket
// before a new message began.
func readSync(r io.Reader) (syncMsg, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = fmt.Errorf("%w: truncated frame header", errMalformed)
		}
		return syncMsg{}, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > maxFrame {
		return syncMsg{}, fmt.Errorf("%w: frame length %d", errMalformed, n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return syncMsg{}, fmt.Errorf("%w: truncated frame: %v", errMalformed, err)
	}
	return decodeSync(b)
}

func decodeSync(b []byte) (syncMsg, error) {
	if len(b) == 0 {
		return syncMsg{}, fmt.Errorf("%w: empty frame", errMalformed)
	}
	d := wireDecoder{b: b[1:]}
	m := syncMsg{Type: b[0]}
	switch m.Type {
	case msgStart:
	case msgError:
		m.Kind, m.Msg = d.str(), d.str()
	case msgReady:
		n := d.count()
		for i := 0; i < n && d.err == nil; i++ {
			m.Mark = append(m.Mark, trace.Mark{Name: d.str(), At: d.int()})
		}
	case msgConfig, msgExec:
		m.Cfg = d.config()
	default:
		return syncMsg{}, fmt.Errorf("%w: unknown type %q", errMalformed, m.Type)
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%w: %d bytes left over", errMalformed, len(d.b))
	}
	return m, d.err
}

// config encodes exactly what the init reads of its configuration: a field
// the init starts to use must be added here and in wireDecoder.config, or
// the init sees its zero value (TestWireConfigRoundTrip lists them).
func (e *wireEncoder) config(c initConfig) {
	e.str(c.Rootfs)
	e.str(c.DevPts)
	e.bool(c.Trace)
	e.bool(c.Pause)
	e.bool(c.Reap)
	e.strs(c.GroupAdd)
	e.bool(c.Privileged)
	e.filter(c.Filter)
	s := c.Spec
	if s == nil || s.Process == nil || s.Linux == nil {
		e.bool(false)
		return
	}
	e.bool(true)
	e.str(s.Hostname)
	e.str(s.Domainname)
	e.bool(s.Root != nil && s.Root.Readonly)

	p := s.Process
	e.bool(p.Terminal)
	e.strs(p.Args)
	e.strs(p.Env)
	e.str(p.Cwd)
	e.uint(uint64(p.User.UID))
	e.uint(uint64(p.User.GID))
	e.uint(uint64(len(p.User.AdditionalGids)))
	for _, g := range p.User.AdditionalGids {
		e.uint(uint64(g))
	}
	e.optUint(p.User.Umask)
	e.str(p.User.Username)
	e.uint(uint64(len(p.Rlimits)))
	for _, rl := range p.Rlimits {
		e.str(rl.Type)
		e.uint(rl.Hard)
		e.uint(rl.Soft)
	}
	e.bool(p.Capabilities != nil)
	if p.Capabilities != nil {
		e.strs(p.Capabilities.Bounding)
	}
	e.bool(p.NoNewPrivileges)
	e.bool(p.OOMScoreAdj != nil)
	if p.OOMScoreAdj != nil {
		e.int(int64(*p.OOMScoreAdj))
	}

	e.uint(uint64(len(s.Mounts)))
	for _, m := range s.Mounts {
		e.str(m.Destination)
		e.str(m.Type)
		e.str(m.Source)
		e.strs(m.Options)
	}

	l := s.Linux
	e.uint(uint64(len(l.Namespaces)))
	for _, ns := range l.Namespaces {
		e.str(string(ns.Type))
		e.str(ns.Path)
	}
	e.str(l.RootfsPropagation)
	e.uint(uint64(len(l.Devices)))
	for _, d := range l.Devices {
		e.str(d.Path)
		e.str(d.Type)
		e.int(d.Major)
		e.int(d.Minor)
		var mode *uint32
		if d.FileMode != nil {
			m := uint32(*d.FileMode)
			mode = &m
		}
		e.optUint(mode)
		e.optUint(d.UID)
		e.optUint(d.GID)
	}
	keys := make([]string, 0, len(l.Sysctl))
	for k := range l.Sysctl {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	e.uint(uint64(len(keys)))
	for _, k := range keys {
		e.str(k)
		e.str(l.Sysctl[k])
	}
	e.strs(l.MaskedPaths)
	e.strs(l.ReadonlyPaths)
}

func (d *wireDecoder) config() initConfig {
	c := initConfig{Rootfs: d.str(), DevPts: d.str(), Trace: d.bool(), Pause: d.bool(), Reap: d.bool(), GroupAdd: d.strs(),
		Privileged: d.bool(), Filter: d.filter()}
	if !d.bool() {
		return c
	}
	s := &specs.Spec{Hostname: d.str(), Domainname: d.str()}
	if d.bool() {
		s.Root = &specs.Root{Readonly: true}
	}

	p := &specs.Process{Terminal: d.bool(), Args: d.strs(), Env: d.strs(), Cwd: d.str()}
	p.User.UID = d.uint32()
	p.User.GID = d.uint32()
	for n := d.count(); n > 0 && d.err == nil; n-- {
		p.User.AdditionalGids = append(p.User.AdditionalGids, d.uint32())
	}
	p.User.Umask = d.optUint()
	p.User.Username = d.str()
	for n := d.count(); n > 0 && d.err == nil; n-- {
		p.Rlimits = append(p.Rlimits, specs.POSIXRlimit{Type: d.str(), Hard: d.uint(), Soft: d.uint()})
	}
	if d.bool() {
		p.Capabilities = &specs.LinuxCapabilities{Bounding: d.strs()}
	}
	p.NoNewPrivileges = d.bool()
	if d.bool() {
		v := int(d.int())
		p.OOMScoreAdj = &v
	}
	s.Process = p

	for n := d.count(); n > 0 && d.err == nil; n-- {
		s.Mounts = append(s.Mounts, specs.Mount{Destination: d.str(), Type: d.str(), Source: d.str(), Options: d.strs()})
	}

	l := &specs.Linux{}
	for n := d.count(); n > 0 && d.err == nil; n-- {
		l.Namespaces = append(l.Namespaces, specs.LinuxNamespace{Type: specs.LinuxNamespaceType(d.str()), Path: d.str()})
	}
	l.RootfsPropagation = d.str()
	for n := d.count(); n > 0 && d.err == nil; n-- {
		dev := specs.LinuxDevice{Path: d.str(), Type: d.str(), Major: d.int(), Minor: d.int()}
		if m := d.optUint(); m != nil {
			mode := os.FileMode(*m)
			dev.FileMode = &mode
		}
		dev.UID, dev.GID = d.optUint(), d.optUint()
		l.Devices = append(l.Devices, dev)
	}
	if n := d.count(); n > 0 {
		l.Sysctl = make(map[string]string, n)
		for ; n > 0 && d.err == nil; n-- {
			k := d.str()
			l.Sysctl[k] = d.str()
		}
	}
	l.MaskedPaths = d.strs()
	l.ReadonlyPaths = d.strs()
	s.Linux = l
	c.Spec = s
	return c
}

// filter encodes a compiled seccomp filter: its flags and instructions.
func (e *wireEncoder) filter(f *seccomp.Filter) {
	e.bool(f != nil)
	if f == nil {
		return
	}
	e.uint(uint64(f.Flags))
	e.uint(uint64(len(f.Program)))
	for _, in := range f.Program {
		e.uint(uint64(in.Code))
		e.uint(uint64(in.Jt))
		e.uint(uint64(in.Jf))
		e.uint(uint64(in.K))
	}
}

func (d *wireDecoder) filter() *seccomp.Filter {
	if !d.bool() {
		return nil
	}
	f := &seccomp.Filter{Flags: d.uint32()}
	n := d.count()
	if n > 0 {
		f.Program = make([]unix.SockFilter, 0, n)
	}
	for ; n > 0 && d.err == nil; n-- {
		code, jt, jf, k := d.uint(), d.uint(), d.uint(), d.uint32()
		if code > 0xffff || jt > 0xff || jf > 0xff {
			d.fail("filter instruction")
			break
		}
		f.Program = append(f.Program, unix.SockFilter{Code: uint16(code), Jt: uint8(jt), Jf: uint8(jf), K: k})
	}
	return f
}

type wireEncoder struct{ b []byte }

func (e *wireEncoder) uint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *wireEncoder) int(v int64)   { e.b = binary.AppendVarint(e.b, v) }

func (e *wireEncoder) bool(v bool) {
	if v {
		e.b = append(e.b, 1)
	} else {
		e.b = append(e.b, 0)
	}
}

func (e *wireEncoder) str(s string) {
	e.uint(uint64(len(s)))
	e.b = append(e.b, s...)
}

func (e *wireEncoder) strs(ss []string) {
	e.uint(uint64(len(ss)))
	for _, s := range ss {
		e.str(s)
	}
}

func (e *wireEncoder) optUint(v *uint32) {
	e.bool(v != nil)
	if v != nil {
		e.uint(uint64(*v))
	}
}

// wireDecoder reads fields until the first error, after which every read
// returns a zero value; callers check err once at the end.
type wireDecoder struct {
	b   []byte
	err error
}

func (d *wireDecoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: bad %s", errMalformed, what)
	}
	d.b = nil
}

func (d *wireDecoder) uint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("number")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *wireDecoder) int() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("number")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *wireDecoder) uint32() uint32 {
	v := d.uint()
	if v > 1<<32-1 {
		d.fail("32-bit number")
		return 0
	}
	return uint32(v)
}

func (d *wireDecoder) bool() bool {
	if len(d.b) == 0 || d.b[0] > 1 {
		d.fail("flag")
		return false
	}
	v := d.b[0] == 1
	d.b = d.b[1:]
	return v
}

func (d *wireDecoder) str() string {
	n := d.uint()
	if n > uint64(len(d.b)) {
		d.fail("string length")
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

// count reads a list length; every element takes at least one byte, so a
// length beyond the bytes left is malformed (and never allocated).
func (d *wireDecoder) count() int {
	n := d.uint()
	if n > uint64(len(d.b)) {
		d.fail("list length")
		return 0
	}
	return int(n)
}

func (d *wireDecoder) strs() []string {
	n := d.count()
	if n == 0 {
		return nil
	}
	out := make([]string, 0, n)
	for ; n > 0 && d.err == nil; n-- {
		out = append(out, d.str())
	}
	return out
}

func (d *wireDecoder) optUint() *uint32 {
	if !d.bool() {
		return nil
	}
	v := d.uint32()
	return &v
}
