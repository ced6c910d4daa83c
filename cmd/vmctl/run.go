package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	units "github.com/docker/go-units"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/vmctl/vmctl/engine/services/containersvc"
)

type runOptions struct {
	rm          bool
	detach      bool
	interactive bool
	tty         bool
	env         []string
	workdir     string
	user        string
	hostname    string
	name        string
	memory      string
	cpus        string
	hypervisor  string
	entrypoint  string
	pull        string
	volumes     []string
	labels      []string
}

func newRunCommand(g *globalOptions) *cobra.Command {
	o := &runOptions{}
	cmd := &cobra.Command{
		Use:   "run [OPTIONS] IMAGE [COMMAND] [ARG...]",
		Short: "Run a command in a new container, in its own VM",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if g.host != "" {
				return remoteRun(cmd.Context(), g, o, args[0], args[1:])
			}
			if o.detach {
				// The in-process engine ends with this process.
				return &statusError{code: 125, err: fmt.Errorf("-d needs a daemon: start vmctld and pass -H or set VMCTL_HOST")}
			}
			return runContainer(cmd.Context(), g, o, args[0], args[1:])
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&o.detach, "detach", "d", false, "run in the background and print the container ID (needs -H/VMCTL_HOST)")
	o.addFlags(f)
	return cmd
}

// addFlags registers the container options run and create share.
func (o *runOptions) addFlags(f *pflag.FlagSet) {
	// Flags after IMAGE belong to the container's command.
	f.SetInterspersed(false)
	f.BoolVar(&o.rm, "rm", false, "remove the container when it exits")
	f.BoolVarP(&o.interactive, "interactive", "i", false, "keep stdin open and stream it to the container")
	f.BoolVarP(&o.tty, "tty", "t", false, "allocate a terminal")
	f.StringArrayVarP(&o.env, "env", "e", nil, "set an environment variable (KEY=VALUE; KEY alone takes it from this environment)")
	f.StringVarP(&o.workdir, "workdir", "w", "", "working directory inside the container")
	f.StringVarP(&o.user, "user", "u", "", "user to run as: UID[:GID]")
	f.StringVar(&o.hostname, "hostname", "", "container host name")
	f.StringVar(&o.name, "name", "", "assign a name to the container")
	f.StringVarP(&o.memory, "memory", "m", "", "memory limit (e.g. 256m, 1g)")
	f.StringVar(&o.cpus, "cpus", "", "number of CPUs (e.g. 1, 1.5)")
	f.StringVar(&o.hypervisor, "hypervisor", "auto", "hypervisor: auto, kvm (native VMM) or qemu")
	f.StringVar(&o.entrypoint, "entrypoint", "", "override the image's entrypoint")
	f.StringVar(&o.pull, "pull", "missing", `pull the image before running: "missing", "never" or "always"`)
	f.StringArrayVarP(&o.volumes, "volume", "v", nil, "mount a volume: NAME:/path[:ro] (created if missing), or /path for an anonymous volume")
	f.StringArrayVarP(&o.labels, "label", "l", nil, "set a label on the container: KEY=VALUE (or KEY, with an empty value)")
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

func (o *runOptions) createOptions(image string, cmd []string) (containersvc.CreateOptions, error) {
	co := containersvc.CreateOptions{
		Image: image, Name: o.name, Cmd: cmd, WorkingDir: o.workdir, User: o.user,
		Hostname: o.hostname, Tty: o.tty, OpenStdin: o.interactive, Hypervisor: o.hypervisor,
		AutoRemove: o.rm,
	}
	co.Env = resolveEnv(o.env)
	if o.entrypoint != "" {
		co.Entrypoint = []string{o.entrypoint}
	}
	for _, kv := range o.labels {
		k, v, _ := strings.Cut(kv, "=")
		if k == "" {
			return co, fmt.Errorf("invalid --label %q: want KEY=VALUE", kv)
		}
		if co.Labels == nil {
			co.Labels = map[string]string{}
		}
		co.Labels[k] = v
	}
	for _, v := range o.volumes {
		m, err := containersvc.ParseBind(v)
		if err != nil {
			return co, err
		}
		co.Volumes = append(co.Volumes, m)
	}
	if o.memory != "" {
		n, err := units.RAMInBytes(o.memory)
		if err != nil || n <= 0 {
			return co, fmt.Errorf("invalid --memory %q: want a size such as 64m or 1g", o.memory)
		}
		co.MemoryBytes = n
	}
	if o.cpus != "" {
		f, err := strconv.ParseFloat(o.cpus, 64)
		if err != nil || f <= 0 || math.IsInf(f, 0) || math.IsNaN(f) {
			return co, fmt.Errorf("invalid --cpus %q: want a positive number such as 1 or 1.5", o.cpus)
		}
		co.NanoCPUs = int64(f * 1e9)
	}
	switch o.hypervisor {
	case "auto", "kvm", "qemu":
	default:
		return co, fmt.Errorf("invalid --hypervisor %q: want auto, kvm or qemu", o.hypervisor)
	}
	switch o.pull {
	case "missing", "never", "always":
	default:
		return co, fmt.Errorf("invalid --pull %q: want missing, never or always", o.pull)
	}
	return co, nil
}

// errNotATTY refuses -it without a terminal to read keys from.
var errNotATTY = errors.New("the input device is not a TTY; drop -t or run from a terminal")

func runContainer(ctx context.Context, g *globalOptions, o *runOptions, image string, cmdArgs []string) error {
	co, err := o.createOptions(image, cmdArgs)
	if err != nil {
		return &statusError{code: 125, err: err}
	}
	rows, cols, err := terminalSize(o.tty, o.interactive)
	if err != nil {
		return err
	}
	co.ConsoleRows, co.ConsoleCols = rows, cols

	e, err := g.open()
	if err != nil {
		return err
	}
	// Until the container runs, a signal cancels the run and removes what
	// was made; afterwards signals go to the container.
	bootCtx, stopBoot := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer stopBoot()
	// bootFailed reports err, or the interrupt that caused it.
	bootFailed := func(err error) error {
		if bootCtx.Err() != nil && ctx.Err() == nil {
			return &statusError{code: 130, err: fmt.Errorf("interrupted while starting the container")}
		}
		return err
	}
	// Like docker run: an image that is not here is pulled first, with its
	// progress on stderr.
	switch o.pull {
	case "missing":
		if err := pullIfMissing(bootCtx, e, image, os.Stderr); err != nil {
			return bootFailed(err)
		}
	case "always":
		if _, err := pullImage(bootCtx, e, image, os.Stderr); err != nil {
			return bootFailed(err)
		}
	}
	c, err := e.Containers.Create(bootCtx, co)
	if err != nil {
		return bootFailed(err)
	}
	stdio := containersvc.Stdio{Stdout: os.Stdout, Stderr: os.Stderr}
	if o.interactive {
		stdio.Stdin = os.Stdin
	}
	if o.tty {
		stdio.Stderr = nil // a terminal carries everything on stdout
	}
	if err := e.Containers.Start(bootCtx, c.ID, stdio); err != nil {
		if o.rm {
			e.Containers.Remove(context.Background(), c.ID, containersvc.RemoveOptions{Force: true})
		}
		return bootFailed(err)
	}
	stopBoot()

	restore := userTerminal(o.tty, o.interactive, func(rows, cols uint16) { e.Containers.Resize(ctx, c.ID, rows, cols) })
	defer restore()
	stopSignals := forwardSignals(func(sig syscall.Signal) { e.Containers.Kill(ctx, c.ID, sig) })
	defer stopSignals()

	st, err := e.Containers.Wait(ctx, c.ID)
	if err != nil {
		return err
	}
	if st.Error != "" {
		fmt.Fprintln(os.Stderr, "vmctl: "+st.Error)
	}
	if st.Code != 0 {
		return &statusError{code: st.Code}
	}
	return nil
}
