// Command agentcheck talks to a guest's vmctl-agent the way the engine does:
// under vmctl-vmm through the VMM's hybrid vsock socket (connect to the unix
// socket, "CONNECT <port>\n", wait for "OK ..."), under QEMU through a
// virtio-serial port whose chardev is a unix socket; then ttrpc. It calls
// Health, optionally checks the reported kernel release, with -container
// runs a command in a container on the image and writable disks the VM was
// given (with the serials of api/agent/contract, as the engine names them)
// and checks its output, and with -shutdown asks the agent to end the VM.
// It prints one line per step and exits 0 only when every step succeeded.
// The nested harness runs it inside L1.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"net"
	"os"
	"strings"
	"time"

	"github.com/containerd/ttrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/vmctl/vmctl/api/agent/contract"
	agentapi "github.com/vmctl/vmctl/api/agent/v1"
	vmmapi "github.com/vmctl/vmctl/api/vmm/v1"
	"github.com/vmctl/vmctl/hypervisor/control"
	"github.com/vmctl/vmctl/internal/hybridvsock"
)

func main() {
	var (
		uds      = flag.String("uds", "", "vmctl-vmm's vsock unix socket")
		serial   = flag.String("serial", "", "QEMU's virtio-serial chardev unix socket (instead of -uds)")
		port     = flag.Uint("port", contract.VsockPort, "agent vsock port")
		timeout  = flag.Duration("timeout", time.Minute, "time allowed for the guest to boot and answer")
		release  = flag.String("release", "", "kernel release the agent must report (empty: do not check)")
		shutdown = flag.Bool("shutdown", false, "call Shutdown after Health")
		command  = flag.String("container", "", "run this command (split at spaces) in a container; with -release its output must be the release")
		restored = flag.Bool("restored", false, "call Restored after Health, as the engine does with a guest restored from a snapshot")
		save     = flag.String("save", "", "at the end, close the agent connection and call Save on the vmctl-vmm control socket at `path`")
	)
	flag.Parse()
	if (*uds == "") == (*serial == "") {
		fail("give one of -uds PATH or -serial PATH")
	}
	if *port > math.MaxUint32 {
		fail("-port %d is not a vsock port", *port)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	wantTransport, dial := contract.TransportVsock, func(ctx context.Context) (net.Conn, error) { return hybridvsock.Dial(ctx, *uds, uint32(*port)) }
	if *serial != "" {
		wantTransport, dial = contract.TransportSerial, func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", *serial)
		}
	}
	conn, err := connect(ctx, dial)
	if err != nil {
		fail("connect over %s: %v", wantTransport, err)
	}
	fmt.Printf("agentcheck: %s connected after %.2fs\n", wantTransport, time.Since(start).Seconds())
	tc := ttrpc.NewClient(conn)
	defer tc.Close()
	api := agentapi.NewTTRPCAgentClient(tc)

	h, err := api.Health(ctx, &agentapi.HealthRequest{})
	if err != nil {
		fail("Health: %v", err)
	}
	fmt.Printf("agentcheck: health after %.2fs: release=%s transport=%s agent=%s\n",
		time.Since(start).Seconds(), h.KernelRelease, h.Transport, h.AgentVersion)
	if *release != "" && h.KernelRelease != *release {
		fail("agent reports kernel %q, want %q", h.KernelRelease, *release)
	}
	if h.Transport != wantTransport {
		fail("agent reports transport %q, want %s", h.Transport, wantTransport)
	}
	if *restored {
		seed := make([]byte, 64)
		if _, err := rand.Read(seed); err != nil {
			fail("random seed: %v", err)
		}
		if _, err := api.Restored(ctx, &agentapi.RestoredRequest{Seed: seed, UnixNanos: time.Now().UnixNano()}); err != nil {
			fail("Restored: %v", err)
		}
		fmt.Printf("agentcheck: restored guest ready after %.2fs\n", time.Since(start).Seconds())
	}
	if *command != "" {
		out, status, err := runContainer(ctx, api, strings.Fields(*command))
		if err != nil {
			fail("container %q: %v", *command, err)
		}
		got := strings.TrimSpace(out)
		fmt.Printf("agentcheck: container %q exited %d after %.2fs, output %q\n", *command, status, time.Since(start).Seconds(), got)
		if status != 0 {
			fail("container %q exited with %d, want 0", *command, status)
		}
		if *release != "" && got != *release {
			fail("container %q printed %q, want %q", *command, got, *release)
		}
	}
	if *shutdown {
		if _, err := api.Shutdown(ctx, &agentapi.ShutdownRequest{}); err != nil {
			fail("Shutdown: %v", err)
		}
		fmt.Printf("agentcheck: shutdown acknowledged after %.2fs\n", time.Since(start).Seconds())
	}
	if *save != "" {
		// The guest must see its host connection end before it is saved.
		tc.Close()
		r, err := saveVM(ctx, *save)
		if err != nil {
			fail("Save: %v", err)
		}
		fmt.Printf("agentcheck: saved after %.2fs: %d bytes of state, %d bytes of RAM, guest paused %.0fms\n",
			time.Since(start).Seconds(), r.StateBytes, r.MemoryBytes, float64(r.PausedNs)/1e6)
	}
}

// saveVM calls Save on a vmctl-vmm control socket.
func saveVM(ctx context.Context, path string) (*vmmapi.SaveResponse, error) {
	c, closeClient, err := control.Dial(path)
	if err != nil {
		return nil, err
	}
	defer closeClient()
	return c.Save(ctx, &vmmapi.SaveRequest{})
}

// containerID names the one container, as the engine would.
const containerID = "agentcheck"

// containerSpec is the shape engine/services/containersvc.BuildSpec gives
// a container without a tty, limits or user: the agent sees what the
// engine sends.
func containerSpec(args []string) *specs.Spec {
	return &specs.Spec{
		Version:  specs.Version,
		Process:  &specs.Process{Args: args, Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOSTNAME=" + containerID}, Cwd: "/"},
		Root:     &specs.Root{Path: "rootfs"},
		Hostname: containerID,
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		},
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.MountNamespace}, {Type: specs.UTSNamespace},
				{Type: specs.IPCNamespace}, {Type: specs.NetworkNamespace},
			},
			Resources: &specs.LinuxResources{},
		},
	}
}

// runContainer creates and starts a container running args on the image
// and writable disks, collects its stdout (stderr is shown on failure)
// and waits for it, as the engine's task does.
func runContainer(ctx context.Context, api agentapi.TTRPCAgentService, args []string) (stdout string, status int32, err error) {
	spec, err := json.Marshal(containerSpec(args))
	if err != nil {
		return "", 0, err
	}
	if _, err := api.CreateContainer(ctx, &agentapi.CreateContainerRequest{
		ContainerId: containerID,
		OciSpec:     spec,
		Storages: []*agentapi.Storage{
			{Serial: contract.ImageDiskSerial, Fstype: "ext4", Readonly: true, Role: contract.RoleImage},
			{Serial: contract.WritableDiskSerial, Fstype: "ext4", Role: contract.RoleWritable},
		},
	}); err != nil {
		return "", 0, fmt.Errorf("CreateContainer: %w", err)
	}
	if _, err := api.StartContainer(ctx, &agentapi.ContainerRequest{ContainerId: containerID}); err != nil {
		return "", 0, fmt.Errorf("StartContainer: %w", err)
	}
	if _, err := api.CloseStdin(ctx, &agentapi.ProcessRequest{ContainerId: containerID}); err != nil {
		return "", 0, fmt.Errorf("CloseStdin: %w", err)
	}
	type result struct {
		data []byte
		err  error
	}
	drain := func(read func(context.Context, *agentapi.ReadOutputRequest) (*agentapi.ReadOutputResponse, error)) chan result {
		ch := make(chan result, 1)
		go func() {
			var buf bytes.Buffer
			for {
				r, err := read(ctx, &agentapi.ReadOutputRequest{ContainerId: containerID, MaxLen: 32 << 10, Offset: uint64(buf.Len())})
				if err != nil {
					ch <- result{buf.Bytes(), err}
					return
				}
				buf.Write(r.Data)
				if r.Eof {
					ch <- result{buf.Bytes(), nil}
					return
				}
			}
		}()
		return ch
	}
	outc, errc := drain(api.ReadStdout), drain(api.ReadStderr)
	w, err := api.WaitProcess(ctx, &agentapi.ProcessRequest{ContainerId: containerID})
	if err != nil {
		return "", 0, fmt.Errorf("WaitProcess: %w", err)
	}
	out, serr := <-outc, <-errc
	if out.err != nil {
		return "", 0, fmt.Errorf("ReadStdout: %w", out.err)
	}
	if w.ExitStatus != 0 && len(serr.data) > 0 {
		fmt.Printf("agentcheck: container stderr: %q\n", serr.data)
	}
	return string(out.data), w.ExitStatus, nil
}

// connect dials until the VM accepts: before the VMM creates its socket,
// or while nothing listens on the vsock port in the guest, the attempt
// fails and is retried.
func connect(ctx context.Context, dial func(context.Context) (net.Conn, error)) (net.Conn, error) {
	var last error
	for {
		conn, err := dial(ctx)
		if err == nil {
			return conn, nil
		}
		last = err
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (last attempt: %v)", ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func fail(format string, a ...any) {
	fmt.Printf("agentcheck: "+format+"\n", a...)
	os.Exit(1)
}
