// Package agent is the host side of the engine -> guest agent channel: a
// typed client of api/agent/v1 with one method per agent call, over
// whatever byte stream the sandbox driver provides.
//
// Callers pass and get engine-side Go types (OCI specs, exit statuses,
// output chunks); the protobuf messages and ttrpc stay in this package.
// Every error a method returns is classified once, here, with the classes
// of github.com/containerd/errdefs, keeping the agent's message as its text
// (see convert). The guest is not trusted: an answer that no agent keeping
// to the API would give (more bytes than asked for, output from another
// offset, an exit status no process can have, a file name with a slash)
// fails the call with ErrBadAnswer instead of reaching the caller; a guest
// that breaks ttrpc's framing, floods the channel with answers nobody
// asked for or stops reading it has its connection closed (conn.go), and
// every call fails. Tests drive the client against such guests with
// agenttest.
//
// It does not know how the stream reaches the guest (vsock, virtio-serial)
// nor what the engine does with a container.
package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/ttrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	agentapi "github.com/vmctl/vmctl/api/agent/v1"
)

// Client talks to one guest's agent. Its methods are safe to call from
// several goroutines at once.
type Client struct {
	conn *guardedConn
	tc   *ttrpc.Client
	api  agentapi.TTRPCAgentService
}

// New wraps an established agent channel. The client owns conn. A guest
// that breaks ttrpc's framing, floods the channel with answers nobody
// asked for or stops reading it has the connection closed (see
// guardedConn).
func New(conn net.Conn) *Client { return newClient(conn, writeStall) }

// newClient is New with the time a request may wait for the guest to
// take any of it.
func newClient(conn net.Conn, stall time.Duration) *Client {
	gc := newGuardedConn(conn, stall)
	tc := ttrpc.NewClient(gc)
	return &Client{conn: gc, tc: tc, api: agentapi.NewTTRPCAgentClient(tc)}
}

// Deadlines of the agent's calls, so that a guest that stops answering (a
// paused or wedged VM, a hostile agent) never holds the engine; a caller's
// earlier deadline wins. Calls that wait by design have none of their own,
// and their caller's context ends them: WaitProcess (until the process
// exits), ReadStdout and ReadStderr (until there is output) and
// WriteStdin (while the process does not read). ListProcesses and Stats
// have queryTimeout.
var (
	// callTimeout bounds a control call, and each chunk of a transfer.
	callTimeout = 60 * time.Second
	// healthTimeout bounds Health, which waits for a booting agent.
	healthTimeout = 5 * time.Minute
	// bulkTimeout bounds a call that makes or unpacks a whole tar in the
	// guest (an export of a container's changes, an archive of a path,
	// the unpacking of an upload).
	bulkTimeout = 10 * time.Minute
)

// Close closes the channel; calls in flight fail with errdefs.ErrUnavailable.
func (c *Client) Close() error { return c.tc.Close() }

// Health is what the agent reports about itself.
type Health struct {
	AgentVersion string
	// KernelRelease is uname -r of the guest.
	KernelRelease string
	// Transport is the channel that answered: contract.TransportVsock or
	// contract.TransportSerial.
	Transport string
}

// Health asks the agent whether it serves requests, and blocks until it
// answers, ctx ends or healthTimeout passes: it is how a boot waits for
// the agent.
//
// One call is enough: on a single-stream channel the request waits in the
// stream until the agent starts reading, so retrying would only queue
// duplicates.
func (c *Client) Health(ctx context.Context) (Health, error) {
	ctx, cancel := context.WithTimeout(ctx, healthTimeout)
	defer cancel()
	resp, err := c.api.Health(ctx, &agentapi.HealthRequest{})
	if err != nil {
		return Health{}, c.convert(err)
	}
	return Health{
		AgentVersion:  oneLine(resp.GetAgentVersion()),
		KernelRelease: oneLine(resp.GetKernelRelease()),
		Transport:     oneLine(resp.GetTransport()),
	}, nil
}

// restoredSeedBytes is the entropy each restored guest gets.
const restoredSeedBytes = 64

// Restored tells a guest started from a saved state what it cannot know:
// fresh entropy from the host's generator, the time, and the address each
// NIC that still has a template's (the key) must take. The agent then
// probes its disks and NICs afresh. Call it once, right after Health.
func (c *Client) Restored(ctx context.Context, macs map[string]net.HardwareAddr) error {
	seed := make([]byte, restoredSeedBytes)
	if _, err := rand.Read(seed); err != nil {
		return err
	}
	req := &agentapi.RestoredRequest{Seed: seed}
	for from, to := range macs {
		req.Macs = append(req.Macs, &agentapi.MACChange{From: from, To: to.String()})
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	// The time goes last, as close to the send as can be.
	req.UnixNanos = time.Now().UnixNano()
	_, err := c.api.Restored(ctx, req)
	return c.convert(err)
}

// Storage is a disk the agent mounts for a container.
type Storage struct {
	// Serial is the disk's virtio-blk serial (see api/agent/contract).
	Serial string
	// FSType is the disk's filesystem; empty means ext4.
	FSType   string
	Options  []string
	ReadOnly bool
	// Role is contract.RoleImage, RoleWritable, RoleVolume, RoleBind or
	// RoleRootfs.
	Role string
	// MountPoint is where a volume or bind appears in the container; empty
	// for the other roles.
	MountPoint string
	// Subdir is, for a rootfs share, the directory of the share that is
	// the rootfs (one path component); empty for the share's root.
	Subdir string
}

// Interface is a NIC of the VM as the agent configures it.
type Interface struct {
	// MAC finds the device in the guest: the address its sandbox.NIC has.
	MAC net.HardwareAddr
	// Name is what the device is renamed to: contract.InterfaceName(i)
	// for the VM's i-th NIC.
	Name string
	// Addresses are the interface's addresses with their prefix lengths
	// (172.30.0.2/16).
	Addresses []netip.Prefix
	// MTU 0 keeps the device's.
	MTU int
}

// Route is a route of the guest's main table.
type Route struct {
	// Destination is the network reached; the zero Prefix is the default
	// route (of Gateway's family).
	Destination netip.Prefix
	// Gateway is the next hop; it must be in the subnet of an address of
	// the interfaces configured with the route. The zero Addr means the
	// destination is on Device's link.
	Gateway netip.Addr
	// Device is the Name of one of the interfaces; required without a
	// Gateway.
	Device string
}

// ConfigureNetwork has the agent configure the guest's interfaces and
// routes, before CreateContainer. The agent checks the whole request
// first and undoes a change the kernel refuses: an error
// (errdefs.ErrInvalidArgument for an absent MAC, an address or route it
// cannot take) leaves the guest's network as it was. Safe to retry.
func (c *Client) ConfigureNetwork(ctx context.Context, ifaces []Interface, routes []Route) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	req := &agentapi.ConfigureNetworkRequest{}
	for _, in := range ifaces {
		if len(in.MAC) != 6 {
			return fmt.Errorf("configure network: interface %s: MAC address %q is not 6 bytes", in.Name, in.MAC)
		}
		if in.MTU < 0 || in.MTU > math.MaxUint16 {
			return fmt.Errorf("configure network: interface %s: MTU %d is outside 0..65535", in.Name, in.MTU)
		}
		ni := &agentapi.NetworkInterface{Mac: in.MAC.String(), Name: in.Name, Mtu: uint32(in.MTU)}
		for _, a := range in.Addresses {
			if !a.IsValid() {
				return fmt.Errorf("configure network: interface %s: an address is not set", in.Name)
			}
			ni.Addresses = append(ni.Addresses, a.String())
		}
		req.Interfaces = append(req.Interfaces, ni)
	}
	for _, r := range routes {
		nr := &agentapi.NetworkRoute{Device: r.Device}
		if r.Destination.IsValid() {
			nr.Destination = r.Destination.String()
		}
		if r.Gateway.IsValid() {
			nr.Gateway = r.Gateway.String()
		}
		req.Routes = append(req.Routes, nr)
	}
	_, err := c.api.ConfigureNetwork(ctx, req)
	return c.convert(err)
}

// ContainerNetwork is what a container gets of its VM's network. The zero
// value is a container with only loopback and the image's /etc files.
type ContainerNetwork struct {
	// Hosts, ResolvConf and HostnameFile are the contents of the
	// container's /etc/hosts, /etc/resolv.conf and /etc/hostname; an empty
	// one keeps the image's file.
	Hosts, ResolvConf, HostnameFile string
	// ShareGuestNetwork makes the container use the guest's network
	// namespace, where ConfigureNetwork put the VM's NICs, instead of a new
	// one with only lo.
	ShareGuestNetwork bool
}

// CreateContainer has the agent mount the storages, build the rootfs and
// start the container's init stopped before it runs spec's command.
// spec.Root is ignored: the rootfs is the overlay of the storages.
func (c *Client) CreateContainer(ctx context.Context, id string, spec *specs.Spec, storages []Storage, network ContainerNetwork) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	specJSON, err := json.Marshal(spec)
	if err != nil {
		return fmt.Errorf("encode the OCI spec of container %s: %w", id, err)
	}
	req := &agentapi.CreateContainerRequest{
		ContainerId: id, OciSpec: specJSON,
		Hosts: network.Hosts, ResolvConf: network.ResolvConf, HostnameFile: network.HostnameFile,
		ShareGuestNetwork: network.ShareGuestNetwork,
	}
	for _, s := range storages {
		req.Storages = append(req.Storages, &agentapi.Storage{
			Serial: s.Serial, Fstype: s.FSType, Options: s.Options, Readonly: s.ReadOnly,
			Role: s.Role, MountPoint: s.MountPoint, Subdir: s.Subdir,
		})
	}
	_, err = c.api.CreateContainer(ctx, req)
	return c.convert(err)
}

// StartContainer lets the container's init run the user's command.
func (c *Client) StartContainer(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	_, err := c.api.StartContainer(ctx, &agentapi.ContainerRequest{ContainerId: id})
	return c.convert(err)
}

// PauseContainer freezes the container's processes (its cgroup's freezer).
func (c *Client) PauseContainer(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	_, err := c.api.PauseContainer(ctx, &agentapi.ContainerRequest{ContainerId: id})
	return c.convert(err)
}

// ResumeContainer thaws a paused container.
func (c *Client) ResumeContainer(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	_, err := c.api.ResumeContainer(ctx, &agentapi.ContainerRequest{ContainerId: id})
	return c.convert(err)
}

// RemoveContainer kills what is left of the container and unmounts its
// storage. Safe to retry.
func (c *Client) RemoveContainer(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	_, err := c.api.RemoveContainer(ctx, &agentapi.ContainerRequest{ContainerId: id})
	return c.convert(err)
}

// Process addresses a process in the guest: the container's own process
// has an empty ExecID, a process added by ExecProcess the ID the host gave
// it.
type Process struct {
	ContainerID string
	ExecID      string
}

// ExecProcess starts proc as process p.ExecID inside the running container
// p.ContainerID.
func (c *Client) ExecProcess(ctx context.Context, p Process, proc *specs.Process) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	procJSON, err := json.Marshal(proc)
	if err != nil {
		return fmt.Errorf("encode exec process %s: %w", p.ExecID, err)
	}
	_, err = c.api.ExecProcess(ctx, &agentapi.ExecProcessRequest{ContainerId: p.ContainerID, ExecId: p.ExecID, OciProcess: procJSON})
	return c.convert(err)
}

// Exit is how a process ended.
type Exit struct {
	// Status is the exit code, or 128+N if signal N killed the process.
	Status int
	// OOMKilled is set when the container's cgroup saw an OOM kill.
	OOMKilled bool
}

// maxExitStatus is the largest status a process can end with: an exit code
// is one byte, and 128+N for the signals (N <= 64) stays below it.
const maxExitStatus = 255

// WaitProcess blocks until the process exits. Safe to retry: a finished
// process keeps its status until its container is removed.
func (c *Client) WaitProcess(ctx context.Context, p Process) (Exit, error) {
	resp, err := c.api.WaitProcess(ctx, &agentapi.ProcessRequest{ContainerId: p.ContainerID, ExecId: p.ExecID})
	if err != nil {
		return Exit{}, c.convert(err)
	}
	if st := resp.GetExitStatus(); st < 0 || st > maxExitStatus {
		return Exit{}, badAnswer("WaitProcess", "exit status %d, outside 0..%d", st, maxExitStatus)
	}
	return Exit{Status: int(resp.GetExitStatus()), OOMKilled: resp.GetOomKilled()}, nil
}

// SignalProcess delivers sig to the process.
func (c *Client) SignalProcess(ctx context.Context, p Process, sig syscall.Signal) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if sig <= 0 {
		return fmt.Errorf("signal %d is not a signal", sig)
	}
	_, err := c.api.SignalProcess(ctx, &agentapi.SignalProcessRequest{ContainerId: p.ContainerID, ExecId: p.ExecID, Signal: uint32(sig)})
	return c.convert(err)
}

// WriteStdin writes data to the process's stdin (or its terminal) and
// returns how much of it the agent took.
func (c *Client) WriteStdin(ctx context.Context, p Process, data []byte) (int, error) {
	resp, err := c.api.WriteStdin(ctx, &agentapi.WriteStdinRequest{ContainerId: p.ContainerID, ExecId: p.ExecID, Data: data})
	if err != nil {
		return 0, c.convert(err)
	}
	if n := resp.GetLen(); uint64(n) > uint64(len(data)) {
		return 0, badAnswer("WriteStdin", "wrote %d bytes of %d", n, len(data))
	}
	return int(resp.GetLen()), nil
}

// CloseStdin closes the process's stdin; on a terminal it sends EOF.
func (c *Client) CloseStdin(ctx context.Context, p Process) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	_, err := c.api.CloseStdin(ctx, &agentapi.ProcessRequest{ContainerId: p.ContainerID, ExecId: p.ExecID})
	return c.convert(err)
}

// Output is one chunk of a process's output stream.
type Output struct {
	Data []byte
	// EOF is set once the stream has ended and every byte was read.
	EOF bool
}

// ReadStdout returns the next chunk of the process's stdout (all of its
// output with a terminal): at most max bytes from the stream offset
// offset, which is how much of the stream the caller has kept. It blocks
// until there is output or the stream ends. Safe to retry from the same
// offset: the agent sends again what the caller did not keep (see the
// agent API).
func (c *Client) ReadStdout(ctx context.Context, p Process, max int, offset uint64) (Output, error) {
	return c.read(ctx, "ReadStdout", c.api.ReadStdout, p, max, offset)
}

// ReadStderr is ReadStdout for stderr.
func (c *Client) ReadStderr(ctx context.Context, p Process, max int, offset uint64) (Output, error) {
	return c.read(ctx, "ReadStderr", c.api.ReadStderr, p, max, offset)
}

type readCall func(context.Context, *agentapi.ReadOutputRequest) (*agentapi.ReadOutputResponse, error)

func (c *Client) read(ctx context.Context, name string, call readCall, p Process, max int, offset uint64) (Output, error) {
	if max <= 0 {
		return Output{}, fmt.Errorf("%s: read size %d must be positive", name, max)
	}
	maxLen := uint32(min(max, math.MaxUint32))
	resp, err := call(ctx, &agentapi.ReadOutputRequest{ContainerId: p.ContainerID, ExecId: p.ExecID, MaxLen: maxLen, Offset: offset})
	if err != nil {
		return Output{}, c.convert(err)
	}
	switch {
	case resp.GetOffset() != offset:
		return Output{}, badAnswer(name, "data from stream offset %d, asked for %d", resp.GetOffset(), offset)
	case len(resp.GetData()) > int(maxLen):
		return Output{}, badAnswer(name, "%d bytes, asked for at most %d", len(resp.GetData()), maxLen)
	case math.MaxUint64-offset < uint64(len(resp.GetData())):
		return Output{}, badAnswer(name, "data past the largest stream offset")
	}
	return Output{Data: resp.GetData(), EOF: resp.GetEof()}, nil
}

// ResizeTty sets the window size of the process's terminal.
func (c *Client) ResizeTty(ctx context.Context, p Process, rows, cols uint16) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	_, err := c.api.ResizeTty(ctx, &agentapi.ResizeTtyRequest{ContainerId: p.ContainerID, ExecId: p.ExecID, Rows: uint32(rows), Cols: uint32(cols)})
	return c.convert(err)
}

// Shutdown has the agent remove every container, sync and unmount every
// filesystem, and then end the VM. It returns once the agent has synced:
// from then on the guest's disks are consistent on the host.
func (c *Client) Shutdown(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	_, err := c.api.Shutdown(ctx, &agentapi.ShutdownRequest{})
	return c.convert(err)
}

// exportChunk is how much of an export one ReadExport asks for.
const exportChunk = 1 << 20

// ExportChanges writes what the container changed in its root file system
// to w as an OCI layer tar: everything, or with sincePrevious only what
// changed since its previous export. It reads the agent's export in
// chunks and drops it after. An export larger than limit bytes, or an
// answer that does not fit what was asked, fails (a guest is not
// trusted). It returns the number of tar entries (0: nothing changed).
func (c *Client) ExportChanges(ctx context.Context, id string, sincePrevious bool, w io.Writer, limit int64) (int, error) {
	ectx, cancel := context.WithTimeout(ctx, bulkTimeout)
	exp, err := c.api.ExportChanges(ectx, &agentapi.ExportChangesRequest{ContainerId: id, SincePrevious: sincePrevious})
	cancel()
	if err != nil {
		return 0, c.convert(err)
	}
	defer c.dropExport(ctx, id, exp.GetExportId())
	if exp.GetSize() > uint64(limit) {
		return 0, fmt.Errorf("the container's changes take %d bytes, more than the limit of %d", exp.GetSize(), limit)
	}
	if err := c.readExport(ctx, id, exp.GetExportId(), exp.GetSize(), w); err != nil {
		return 0, err
	}
	return int(exp.GetEntries()), nil
}

// dropTimeout bounds an export's drop once its caller has gone.
const dropTimeout = 30 * time.Second

// dropExport drops an export, also for a caller that has gone (its copy
// was cancelled), so that the guest frees its scratch space. The caller
// waits for the drop while its context lasts, and no longer: the drop goes
// on without it, for at most dropTimeout.
func (c *Client) dropExport(ctx context.Context, id, exportID string) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), dropTimeout)
		defer cancel()
		c.api.DropExport(dctx, &agentapi.ExportRequest{ContainerId: id, ExportId: exportID})
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// readExport reads an export of size bytes to w, in chunks.
func (c *Client) readExport(ctx context.Context, id, exportID string, size uint64, w io.Writer) error {
	var off uint64
	for {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		r, err := c.api.ReadExport(cctx, &agentapi.ReadExportRequest{ContainerId: id, ExportId: exportID, Offset: off, MaxLen: exportChunk})
		cancel()
		if err != nil {
			return c.convert(err)
		}
		if len(r.GetData()) > exportChunk || off+uint64(len(r.GetData())) > size {
			return badAnswer("ReadExport", "%d bytes at offset %d of an export of %d", len(r.GetData()), off, size)
		}
		if _, err := w.Write(r.GetData()); err != nil {
			return err
		}
		off += uint64(len(r.GetData()))
		if r.GetEof() || len(r.GetData()) == 0 {
			break
		}
	}
	if off != size {
		return badAnswer("ReadExport", "export ended at %d of %d bytes", off, size)
	}
	return nil
}

// PathStat describes a path of a container's root file system.
type PathStat struct {
	Name       string
	Size       int64
	Mode       fs.FileMode
	Mtime      time.Time
	LinkTarget string
}

// The longest file name and path a Linux guest has (NAME_MAX, PATH_MAX).
const (
	maxNameLen = 255
	maxPathLen = 4096
)

// pathStat is the engine's PathStat of an agent's answer to call, checked:
// the engine hands name and link target on to clients (docker cp's stat
// header), so a name must be one, a link target a path, a size a size.
func pathStat(call string, p *agentapi.PathStat) (PathStat, error) {
	name, target := p.GetName(), p.GetLinkTarget()
	switch {
	case name == "" || len(name) > maxNameLen || strings.ContainsRune(name, 0) || (name != "/" && strings.Contains(name, "/")):
		return PathStat{}, badAnswer(call, "a path named %.64q (%d bytes)", name, len(name))
	case len(target) > maxPathLen || strings.ContainsRune(target, 0):
		return PathStat{}, badAnswer(call, "a link target %.64q (%d bytes)", target, len(target))
	case p.GetSize() < 0:
		return PathStat{}, badAnswer(call, "a size of %d bytes", p.GetSize())
	}
	return PathStat{Name: name, Size: p.GetSize(), Mode: fs.FileMode(p.GetMode()), Mtime: time.Unix(0, p.GetMtimeUnixNano()), LinkTarget: target}, nil
}

// StatPath describes a path of the container's root file system, resolved
// inside it (see the agent API).
func (c *Client) StatPath(ctx context.Context, id, path string) (PathStat, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	st, err := c.api.StatPath(ctx, &agentapi.PathRequest{ContainerId: id, Path: path})
	if err != nil {
		return PathStat{}, c.convert(err)
	}
	return pathStat("StatPath", st)
}

// ArchivePath writes a tar of a path of the container's root file system
// to w, at most limit bytes, and returns the path's description.
func (c *Client) ArchivePath(ctx context.Context, id, path string, w io.Writer, limit int64) (PathStat, error) {
	actx, cancel := context.WithTimeout(ctx, bulkTimeout)
	a, err := c.api.ArchivePath(actx, &agentapi.PathRequest{ContainerId: id, Path: path})
	cancel()
	if err != nil {
		return PathStat{}, c.convert(err)
	}
	defer c.dropExport(ctx, id, a.GetExportId())
	if a.GetSize() > uint64(limit) {
		return PathStat{}, fmt.Errorf("%s takes %d bytes as a tar, more than the limit of %d", path, a.GetSize(), limit)
	}
	st, err := pathStat("ArchivePath", a.GetStat())
	if err != nil {
		return PathStat{}, err
	}
	if err := c.readExport(ctx, id, a.GetExportId(), a.GetSize(), w); err != nil {
		return PathStat{}, err
	}
	return st, nil
}

// CopyIn unpacks the tar r into the directory dir of the container's root
// file system: uploaded in chunks, then unpacked by the agent.
func (c *Client) CopyIn(ctx context.Context, id, dir string, r io.Reader, keepOwners, noOverwriteDirNonDir bool) error {
	var b [8]byte
	rand.Read(b[:])
	upload := hex.EncodeToString(b[:])
	buf := make([]byte, exportChunk)
	var off uint64
	for {
		n, rerr := io.ReadFull(r, buf)
		if n > 0 {
			wctx, cancel := context.WithTimeout(ctx, callTimeout)
			_, err := c.api.WriteUpload(wctx, &agentapi.WriteUploadRequest{ContainerId: id, UploadId: upload, Offset: off, Data: buf[:n]})
			cancel()
			if err != nil {
				return c.convert(err)
			}
			off += uint64(n)
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			return rerr
		}
	}
	if off == 0 {
		return fmt.Errorf("an empty archive")
	}
	xctx, cancel := context.WithTimeout(ctx, bulkTimeout)
	defer cancel()
	_, err := c.api.ExtractUpload(xctx, &agentapi.ExtractUploadRequest{ContainerId: id, UploadId: upload, Path: dir,
		KeepOwners: keepOwners, NoOverwriteDirNonDir: noOverwriteDirNonDir})
	return c.convert(err)
}
