package shim

import (
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	taskapi "github.com/containerd/containerd/api/runtime/task/v2"
	eventsapi "github.com/containerd/containerd/api/services/ttrpc/events/v1"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// The shim binary's contract with containerd (runtime v2), which every
// containerd from 1.6 on speaks:
//   - `BIN -namespace NS -address A -publish-binary P -id ID start`, run in
//     the bundle with TTRPC_ADDRESS set: start the server in the
//     background and print its address (the plain `unix://PATH` form);
//   - `BIN ... -bundle B delete`: clean up after a shim that is gone and
//     print a marshalled DeleteResponse;
//   - the server (the same binary without an action) serves
//     containerd.task.v2.Task on the socket passed as fd 3, sends events to
//     TTRPC_ADDRESS (containerd.services.events.ttrpc.v1.Events/Forward),
//     logs to the bundle's "log" FIFO, and exits after Shutdown.
//
// The library containerd offers for it (runtime/v2/shim of containerd
// 1.7) cannot be linked with the task API this module builds against, and
// the 2.x one prints a start answer containerd 1.6 does not read.

// ttrpcAddressEnv names containerd's ttrpc address in the environment.
const ttrpcAddressEnv = "TTRPC_ADDRESS"

type flags struct {
	namespace, id, address, bundle, publishBinary string
	debug                                         bool
	action                                        string
}

func parseFlags(args []string) (flags, error) {
	var f flags
	fs := flag.NewFlagSet(filepath.Base(os.Args[0]), flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&f.namespace, "namespace", "", "containerd namespace")
	fs.StringVar(&f.id, "id", "", "task id")
	fs.StringVar(&f.address, "address", "", "containerd's grpc address")
	fs.StringVar(&f.bundle, "bundle", "", "bundle path (delete)")
	fs.StringVar(&f.publishBinary, "publish-binary", "", "containerd binary (unused: events go over ttrpc)")
	fs.BoolVar(&f.debug, "debug", false, "debug logging")
	// Flags containerd passes that the shim has no use for.
	fs.String("socket", "", "")
	fs.Bool("v", false, "")
	if err := fs.Parse(args); err != nil {
		return f, err
	}
	f.action = fs.Arg(0)
	if f.namespace == "" {
		return f, errors.New("shim namespace cannot be empty")
	}
	if f.id == "" && f.action != "" {
		return f, errors.New("no task id (-id)")
	}
	return f, nil
}

// Run is the shim binary: it does what containerd asks (see above) and
// exits.
func Run(cfg Config) {
	cfg.setDefaults()
	f, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", filepath.Base(os.Args[0]), err)
		os.Exit(2)
	}
	switch f.action {
	case "start":
		err = start(cfg, f)
	case "delete":
		err = deleteAction(cfg, f)
	case "":
		err = serve(cfg, f)
	default:
		err = fmt.Errorf("unknown action %q: want start or delete", f.action)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", filepath.Base(os.Args[0]), err)
		os.Exit(1)
	}
}

// socketPath is where the shim serving group listens: short (unix socket
// paths are limited), and one per containerd, namespace and group (a
// task's own ID, or its pod's sandbox ID: groupID).
func socketPath(cfg Config, f flags, group string) string {
	d := sha256.Sum256([]byte(f.address + "\x00" + f.namespace + "\x00" + group))
	return filepath.Join(cfg.StateRoot, "s", fmt.Sprintf("%x", d[:12]))
}

// bundleGroup is the group of the task whose bundle is the working
// directory: a pod's container goes to the shim of its pod's sandbox.
func bundleGroup(id string) string {
	spec, err := readSpec(".")
	if err != nil {
		return id
	}
	return groupID(spec, id)
}

// start starts the server in the background on a socket it binds here,
// and prints the socket's address.
func start(cfg Config, f flags) (retErr error) {
	// containerd writes the runtime options to stdin; they reach Create
	// again, which checks them.
	_, _ = io.Copy(io.Discard, io.LimitReader(os.Stdin, 1<<20))
	path := socketPath(cfg, f, bundleGroup(f.id))
	address := "unix://" + path
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		if c, derr := net.DialTimeout("unix", path, 100*time.Millisecond); derr == nil {
			// This task's shim runs already (containerd retried).
			c.Close()
			return printAddress(address)
		}
		// Left by a shim that died.
		os.Remove(path)
		if ln, err = net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"}); err != nil {
			return fmt.Errorf("listen on %s: %w", path, err)
		}
	}
	ln.SetUnlinkOnClose(false)
	defer func() {
		ln.Close()
		if retErr != nil {
			os.Remove(path)
		}
	}()
	if err := os.WriteFile("address", []byte(address), 0o644); err != nil {
		return err
	}
	sock, err := ln.File()
	if err != nil {
		return err
	}
	defer sock.Close()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	args := []string{"-namespace", f.namespace, "-id", f.id, "-address", f.address}
	if f.debug {
		args = append(args, "-debug")
	}
	cmd := exec.Command(self, args...)
	cmd.Dir, _ = os.Getwd()
	// fd 3 is the socket. A process group of its own: containerd's
	// signals to this command's group do not reach the server. Standard
	// output stays unset: containerd reads this command's until it closes.
	cmd.ExtraFiles = []*os.File{sock}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	// The server outlives this command; containerd, not us, waits for it.
	if err := os.WriteFile("/proc/"+strconv.Itoa(cmd.Process.Pid)+"/oom_score_adj", []byte("-999"), 0); err != nil && !errors.Is(err, os.ErrPermission) {
		cmd.Process.Kill()
		return fmt.Errorf("adjust the shim's OOM score: %w", err)
	}
	cmd.Process.Release()
	return printAddress(address)
}

func printAddress(address string) error {
	_, err := os.Stdout.WriteString(address)
	return err
}

// deleteAction cleans up after the task's shim (gone, or about to be):
// it ends the task's VM if it still runs and unmounts the rootfs.
func deleteAction(cfg Config, f flags) error {
	bundle := f.bundle
	if bundle == "" {
		var err error
		if bundle, err = os.Getwd(); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pid, err := cleanupVM(ctx, cfg, bundle)
	if err != nil {
		fmt.Fprintf(os.Stderr, "vmctl shim: %s: %v\n", f.id, err)
	}
	rootfs := filepath.Join(bundle, "rootfs")
	if spec, err := readSpec(bundle); err == nil && spec.Root != nil && spec.Root.Path != "" {
		rootfs = spec.Root.Path
		if !filepath.IsAbs(rootfs) {
			rootfs = filepath.Join(bundle, rootfs)
		}
	}
	if err := unmountRootfs(rootfs); err != nil {
		return err
	}
	if group := bundleGroup(f.id); group == f.id {
		os.Remove(socketPath(cfg, f, group))
	}
	data, err := proto.Marshal(&taskapi.DeleteResponse{
		Pid: uint32(pid), ExitStatus: 128 + uint32(syscall.SIGKILL), ExitedAt: timestamppb.Now(),
	})
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(data)
	return err
}

// serve is the shim server: it serves the task API on fd 3 until
// Shutdown, or a signal to stop.
func serve(cfg Config, f flags) error {
	if w, err := openLog(); err == nil {
		// The bundle's log FIFO, which containerd reads into its own log.
		os.Stderr = w
	}
	ln, err := net.FileListener(os.NewFile(3, "socket"))
	if err != nil {
		return fmt.Errorf("the socket at fd 3: %w", err)
	}
	pub := newPublisher(os.Getenv(ttrpcAddressEnv), f.namespace)
	defer pub.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	var once sync.Once
	stop := func() { once.Do(func() { close(done) }) }
	svc := NewService(ctx, cfg, f.namespace, pub, stop)
	server, err := ttrpc.NewServer(ttrpc.WithServerHandshaker(ttrpc.UnixSocketRequireSameUser()))
	if err != nil {
		return err
	}
	if err := svc.RegisterTTRPC(server); err != nil {
		return err
	}
	go func() {
		if err := server.Serve(ctx, ln); err != nil && !errors.Is(err, ttrpc.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			fmt.Fprintf(os.Stderr, "vmctl shim: serve: %v\n", err)
			stop()
		}
	}()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	// SIGPIPE from a FIFO whose reader went away must not end the shim.
	signal.Ignore(syscall.SIGPIPE)
	select {
	case <-done:
	case <-sigs:
		svc.Shutdown(ctx, &taskapi.ShutdownRequest{Now: true})
	}
	shutdownCtx, cancelShutdown := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelShutdown()
	server.Shutdown(shutdownCtx)
	if addr, err := os.ReadFile("address"); err == nil {
		os.Remove(strings.TrimPrefix(string(addr), "unix://"))
	}
	return nil
}

// openLog opens the bundle's "log" FIFO for writing without waiting for
// containerd's reader.
func openLog() (*os.File, error) {
	return os.OpenFile("log", os.O_WRONLY|syscall.O_NONBLOCK, 0)
}

// publisher forwards events to containerd over ttrpc, reconnecting when
// containerd restarted.
type publisher struct {
	address, namespace string

	mu     sync.Mutex
	client *ttrpc.Client // guarded by mu
}

func newPublisher(address, namespace string) *publisher {
	return &publisher{address: strings.TrimPrefix(address, "unix://"), namespace: namespace}
}

// Publish sends one event; a containerd that cannot be reached is tried
// once more on a new connection.
func (p *publisher) Publish(ctx context.Context, topic string, event proto.Message) error {
	if p.address == "" {
		return errors.New("no containerd address to publish to")
	}
	any, err := anypb.New(event)
	if err != nil {
		return err
	}
	// containerd reads the type by its name alone, as typeurl writes it.
	any.TypeUrl = strings.TrimPrefix(any.TypeUrl, "type.googleapis.com/")
	req := &eventsapi.ForwardRequest{Envelope: &types.Envelope{
		Timestamp: timestamppb.Now(), Namespace: p.namespace, Topic: topic, Event: any,
	}}
	for attempt := 0; ; attempt++ {
		c, err := p.conn()
		if err == nil {
			_, err = eventsapi.NewTTRPCEventsClient(c).Forward(ctx, req)
			if err == nil {
				return nil
			}
			p.drop(c)
		}
		if attempt == 1 || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (p *publisher) conn() (*ttrpc.Client, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.client != nil {
		return p.client, nil
	}
	c, err := net.DialTimeout("unix", p.address, 5*time.Second)
	if err != nil {
		return nil, err
	}
	p.client = ttrpc.NewClient(c)
	return p.client, nil
}

func (p *publisher) drop(c *ttrpc.Client) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.client == c {
		c.Close()
		p.client = nil
	}
}

// Close closes the connection to containerd.
func (p *publisher) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.client != nil {
		p.client.Close()
		p.client = nil
	}
	return nil
}
