package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/containerd/errdefs"
	"github.com/docker/cli/opts"
	units "github.com/docker/go-units"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/vmctl/vmctl/engine/server"
)

type runOptions struct {
	rm          bool
	restart     string
	detach      bool
	interactive bool
	tty         bool
	env         []string
	workdir     string
	user        string
	hostname    string
	domainname  string
	name        string
	memory      string
	cpus        string
	hypervisor  string
	coldBoot    bool
	entrypoint  string
	pull        string
	volumes     []string
	mounts      opts.MountOpt
	sec         securityFlags
	labels      []string
	net         networkOptions
}

func newRunCommand(g *globalOptions) *cobra.Command {
	o := &runOptions{}
	cmd := &cobra.Command{
		Use:   "run [OPTIONS] IMAGE [COMMAND] [ARG...]",
		Short: "Run a command in a new container, in its own VM",
		Long: `Run a command in a new container, in its own VM, as docker run does.

Without a daemon the engine runs in this process, and the container lives
as long as this command: -d needs vmctld.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req, err := o.request(args[0], args[1:])
			if err != nil {
				return &statusError{code: 125, err: err}
			}
			// A detached run reads no keys: -d -it from a script without a
			// terminal is fine, as docker run checks the terminal only when
			// it attaches.
			if !o.detach {
				rows, cols, err := terminalSize(o.tty, o.interactive)
				if err != nil {
					return err
				}
				if rows > 0 && cols > 0 {
					req.HostConfig.ConsoleSize = [2]uint{uint(rows), uint(cols)}
				}
			}
			return g.withEngine("run -d", o.detach, func(r *remote) error {
				return r.run(cmd.Context(), o, req)
			})
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&o.detach, "detach", "d", false, "run in the background and print the container ID (needs vmctld)")
	o.addFlags(f)
	return cmd
}

// addFlags registers the container options run and create share.
func (o *runOptions) addFlags(f *pflag.FlagSet) {
	// Flags after IMAGE belong to the container's command.
	f.SetInterspersed(false)
	f.BoolVar(&o.rm, "rm", false, "remove the container when it exits")
	f.StringVar(&o.restart, "restart", "no", "restart policy (needs vmctld): no, always, unless-stopped, on-failure[:MAX-RETRIES]")
	f.BoolVarP(&o.interactive, "interactive", "i", false, "keep stdin open and stream it to the container")
	f.BoolVarP(&o.tty, "tty", "t", false, "allocate a terminal")
	f.StringArrayVarP(&o.env, "env", "e", nil, "set an environment variable (KEY=VALUE; KEY alone takes it from this environment)")
	f.StringVarP(&o.workdir, "workdir", "w", "", "working directory inside the container")
	f.StringVarP(&o.user, "user", "u", "", "user to run as: a name or UID, with an optional :group or :GID (names are the container's)")
	f.StringVar(&o.hostname, "hostname", "", "container host name")
	f.StringVar(&o.domainname, "domainname", "", "container NIS domain name")
	f.StringVar(&o.name, "name", "", "assign a name to the container")
	f.StringVarP(&o.memory, "memory", "m", "", "memory limit (e.g. 256m, 1g)")
	f.StringVar(&o.cpus, "cpus", "", "number of CPUs (e.g. 1, 1.5)")
	f.StringVar(&o.hypervisor, "hypervisor", "auto", "hypervisor: auto, kvm (native VMM) or qemu (the API's HostConfig.Runtime, docker's --runtime)")
	f.StringVar(&o.hypervisor, "runtime", "auto", "same as --hypervisor")
	f.BoolVar(&o.coldBoot, "cold-boot", false, "boot the container's VM on every start rather than start it from a saved one (the label "+server.ColdBootLabel+"=true)")
	f.StringVar(&o.entrypoint, "entrypoint", "", "override the image's entrypoint")
	f.StringVar(&o.pull, "pull", "missing", `pull the image before running: "missing", "never" or "always"`)
	f.StringArrayVarP(&o.volumes, "volume", "v", nil, "mount a volume or a host directory: NAME:/path[:ro] (created if missing), /host/dir:/path[:ro], or /path for an anonymous volume")
	f.Var(&o.mounts, "mount", "mount a volume or a host directory: type=volume|bind,source=SRC,target=/path[,readonly]")
	f.StringArrayVarP(&o.labels, "label", "l", nil, "set a label on the container: KEY=VALUE (or KEY, with an empty value)")
	o.sec.addFlags(f)
	o.net.addFlags(f)
}

// resolveEnv completes docker's "-e KEY" with this process's value of KEY;
// a KEY that is not set here is passed as given.
func resolveEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		if k, _, ok := strings.Cut(kv, "="); !ok {
			if v, set := os.LookupEnv(k); set {
				kv = k + "=" + v
			}
		}
		out = append(out, kv)
	}
	return out
}

// absoluteBinds makes the relative host paths of -v specs ("./dir:/x",
// "../dir:/x", ".:/x") absolute against the working directory, as the
// docker CLI does; the engine refuses relative ones.
func absoluteBinds(specs []string) []string {
	out := make([]string, 0, len(specs))
	for _, spec := range specs {
		src, rest, ok := strings.Cut(spec, ":")
		if ok && (src == "." || src == ".." || strings.HasPrefix(src, "./") || strings.HasPrefix(src, "../")) {
			if abs, err := filepath.Abs(src); err == nil {
				spec = abs + ":" + rest
			}
		}
		out = append(out, spec)
	}
	return out
}

// request is the create request of run's and create's options: what the
// docker CLI sends for the same flags. The engine checks everything again;
// the checks here only give a flag's own message before anything starts.
func (o *runOptions) request(image string, cmdArgs []string) (client.ContainerCreateOptions, error) {
	if image == "" {
		return client.ContainerCreateOptions{}, errors.New("invalid reference format: the image name is empty")
	}
	cfg := &container.Config{
		Image: image, Env: resolveEnv(o.env), WorkingDir: o.workdir, User: o.user, Hostname: o.hostname, Domainname: o.domainname,
		Tty: o.tty, OpenStdin: o.interactive,
		// docker run -i: stdin closes with the first attached client's EOF.
		StdinOnce:    o.interactive,
		AttachStdin:  o.interactive,
		AttachStdout: true, AttachStderr: true,
	}
	if len(cmdArgs) > 0 {
		cfg.Cmd = cmdArgs
	}
	if o.entrypoint != "" {
		cfg.Entrypoint = []string{o.entrypoint}
	}
	for _, kv := range o.labels {
		k, v, _ := strings.Cut(kv, "=")
		if k == "" {
			return client.ContainerCreateOptions{}, fmt.Errorf("invalid --label %q: want KEY=VALUE", kv)
		}
		if cfg.Labels == nil {
			cfg.Labels = map[string]string{}
		}
		cfg.Labels[k] = v
	}
	if o.coldBoot {
		if cfg.Labels == nil {
			cfg.Labels = map[string]string{}
		}
		cfg.Labels[server.ColdBootLabel] = "true"
	}
	// The engine parses -v itself, with docker's rules; a relative host
	// path is made absolute here, as the docker CLI does.
	hc := &container.HostConfig{AutoRemove: o.rm, Binds: absoluteBinds(o.volumes), Mounts: o.mounts.Value(), Runtime: o.hypervisor}
	if o.restart != "" && o.restart != "no" {
		name, count, hasCount := strings.Cut(o.restart, ":")
		hc.RestartPolicy.Name = container.RestartPolicyMode(name)
		if hasCount {
			n, err := strconv.Atoi(count)
			if err != nil || name != "on-failure" || n < 0 {
				return client.ContainerCreateOptions{}, fmt.Errorf("invalid --restart %q: only on-failure takes a count (on-failure:N)", o.restart)
			}
			hc.RestartPolicy.MaximumRetryCount = n
		}
	}
	if o.memory != "" {
		n, err := units.RAMInBytes(o.memory)
		if err != nil || n <= 0 {
			return client.ContainerCreateOptions{}, fmt.Errorf("invalid --memory %q: want a size such as 64m or 1g", o.memory)
		}
		hc.Memory = n
	}
	if o.cpus != "" {
		f, err := strconv.ParseFloat(o.cpus, 64)
		if err != nil || f <= 0 || math.IsInf(f, 0) || math.IsNaN(f) {
			return client.ContainerCreateOptions{}, fmt.Errorf("invalid --cpus %q: want a positive number such as 1 or 1.5", o.cpus)
		}
		hc.NanoCPUs = int64(f * 1e9)
	}
	switch o.hypervisor {
	case "auto", "kvm", "qemu":
	default:
		return client.ContainerCreateOptions{}, fmt.Errorf("invalid --hypervisor %q: want auto, kvm or qemu", o.hypervisor)
	}
	switch o.pull {
	case "missing", "never", "always":
	default:
		return client.ContainerCreateOptions{}, fmt.Errorf("invalid --pull %q: want missing, never or always", o.pull)
	}
	if err := o.sec.apply(hc); err != nil {
		return client.ContainerCreateOptions{}, err
	}
	if err := o.sec.applyConfig(cfg); err != nil {
		return client.ContainerCreateOptions{}, err
	}
	req := client.ContainerCreateOptions{Config: cfg, HostConfig: hc, Name: o.name}
	if err := o.net.apply(&req); err != nil {
		return client.ContainerCreateOptions{}, err
	}
	return req, nil
}

// errNotATTY refuses -it without a terminal to read keys from.
var errNotATTY = errors.New("the input device is not a TTY; drop -t or run from a terminal")

// run is `docker run`: create (pulling a missing image), attach, wait,
// start, then forward signals and terminal size until the container exits.
func (r *remote) run(ctx context.Context, o *runOptions, req client.ContainerCreateOptions) error {
	image := req.Config.Image
	// Until the container runs, a signal cancels the run and removes what
	// was made; afterwards signals go to the container.
	bootCtx, stopBoot := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer stopBoot()
	// bootFailed reports err, or the interrupt that caused it.
	bootFailed := func(err error, code func(error) error) error {
		if bootCtx.Err() != nil && ctx.Err() == nil {
			return &statusError{code: 130, err: fmt.Errorf("interrupted while starting the container")}
		}
		return code(err)
	}
	created, err := r.create(bootCtx, req, image, o.pull)
	if err != nil {
		return bootFailed(err, func(err error) error { return err })
	}
	id := created.ID
	cleanup := func() {
		if o.rm {
			// The engine removes a --rm container whose start failed
			// itself; one that is gone already is what was asked for.
			if _, err := r.api.ContainerRemove(context.Background(), id, client.ContainerRemoveOptions{Force: true}); err != nil && !errdefs.IsNotFound(err) {
				fmt.Fprintln(os.Stderr, "vmctl: --rm: "+r.fail(err).Error())
			}
		}
	}

	if o.detach {
		if _, err := r.api.ContainerStart(bootCtx, id, client.ContainerStartOptions{}); err != nil {
			cleanup()
			return bootFailed(err, func(err error) error { return startError(r, err) })
		}
		fmt.Println(id)
		return nil
	}

	attach, err := r.api.ContainerAttach(bootCtx, id, client.ContainerAttachOptions{
		Stream: true, Stdin: o.interactive, Stdout: true, Stderr: true,
	})
	if err != nil {
		cleanup()
		return bootFailed(err, r.fail)
	}
	defer attach.Close()
	// With --rm the engine removes the container as it exits; waiting for
	// the removal means the record is gone when vmctl returns.
	cond := container.WaitConditionNextExit
	if o.rm {
		cond = container.WaitConditionRemoved
	}
	wait := r.api.ContainerWait(ctx, id, client.ContainerWaitOptions{Condition: cond})

	// Detaching leaves the container to a daemon; a container this process
	// runs ends with it, so there is nothing to detach from.
	outputDone, detached := streamIODetach(attach.HijackedResponse, o.tty, o.interactive, !r.inProcess)

	if _, err := r.api.ContainerStart(bootCtx, id, client.ContainerStartOptions{}); err != nil {
		attach.Close()
		cleanup()
		return bootFailed(err, func(err error) error { return startError(r, err) })
	}
	stopBoot()

	restore := userTerminal(o.tty, o.interactive, func(rows, cols uint16) { r.resize(ctx, id, rows, cols) })
	defer restore()
	stopSignals := forwardSignals(func(sig syscall.Signal) { r.kill(ctx, id, sig) })
	defer stopSignals()

	return r.waitExit(wait.Result, wait.Error, outputDone, detached)
}

// create creates the container of req, first pulling its image as pull
// ("missing", "never", "always") asks, with the progress on stderr as
// docker run and docker create show it. Errors are the engine's one line.
func (r *remote) create(ctx context.Context, req client.ContainerCreateOptions, image, pull string) (client.ContainerCreateResult, error) {
	if pull == "always" {
		if err := r.pull(ctx, image, os.Stderr); err != nil {
			return client.ContainerCreateResult{}, err
		}
	}
	created, err := r.api.ContainerCreate(ctx, req)
	if isMissingImage(err) && pull == "missing" {
		fmt.Fprintf(os.Stderr, "Unable to find image '%s' locally\n", image)
		if err := r.pull(ctx, image, os.Stderr); err != nil {
			return client.ContainerCreateResult{}, err
		}
		created, err = r.api.ContainerCreate(ctx, req)
	}
	return created, r.fail(err)
}

// isMissingImage reports whether a create failed for want of its image,
// which a pull may cure, rather than for another thing not found (the
// network it names).
func isMissingImage(err error) bool {
	return err != nil && errdefs.IsNotFound(err) && strings.Contains(err.Error(), "No such image")
}

// waitExit waits for the container's exit status, then for the attach
// stream to end (the engine ends it after the last output, so all of it is
// printed before returning), and turns the status into vmctl's own.
func (r *remote) waitExit(result <-chan container.WaitResponse, errc <-chan error, outputDone, detached <-chan struct{}) error {
	var status container.WaitResponse
	select {
	case status = <-result:
	case err := <-errc:
		return r.fail(err)
	case <-detached:
		// The user typed the detach keys: the container runs on.
		return nil
	}
	<-outputDone
	if status.Error != nil && status.Error.Message != "" {
		fmt.Fprintln(os.Stderr, "vmctl: "+status.Error.Message)
	}
	if status.StatusCode != 0 {
		return &statusError{code: int(status.StatusCode)}
	}
	return nil
}

// startError keeps Docker's exit statuses for a command that could not be
// run: 127 not found, 126 not executable, 125 anything else.
func startError(r *remote, err error) error {
	code := 125
	switch {
	case errdefs.IsNotFound(err):
		code = 127
	case errdefs.IsPermissionDenied(err):
		code = 126
	}
	return &statusError{code: code, err: r.fail(err)}
}

// resize and kill are the engine's side of forwardResize and forwardSignals.
func (r *remote) resize(ctx context.Context, id string, rows, cols uint16) {
	r.api.ContainerResize(ctx, id, client.ContainerResizeOptions{Height: uint(rows), Width: uint(cols)})
}

func (r *remote) kill(ctx context.Context, id string, sig syscall.Signal) {
	r.api.ContainerKill(ctx, id, client.ContainerKillOptions{Signal: fmt.Sprint(int(sig))})
}
