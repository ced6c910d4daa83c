package main

// vmctl exec: another process in a running container, through a daemon.
// Without one there is nothing to ask: a container's VM belongs to the
// `vmctl run` process that started it, and nothing else can reach it.

import (
	"context"
	"errors"
	"fmt"
	"syscall"

	"github.com/moby/moby/client"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

type execOptions struct {
	interactive bool
	tty         bool
	detach      bool
	env         []string
	workdir     string
	user        string
	privileged  bool
}

func newExecCommand(g *globalOptions) *cobra.Command {
	o := &execOptions{}
	cmd := &cobra.Command{
		Use:   "exec [OPTIONS] CONTAINER COMMAND [ARG...]",
		Short: "Run a command in a running container (needs vmctld)",
		Long: `Run a command in a running container, in its namespaces, as docker exec does.

The exit status is the command's (126: not executable, 127: not found).
Like docker exec, vmctl exec does not forward signals: Ctrl-C ends vmctl,
and the daemon ends the command when its next output finds no client.
With -t -i, keys such as Ctrl-C go to the command's terminal instead.`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			req, err := o.request(args[1:])
			if err != nil {
				return &statusError{code: 125, err: err}
			}
			return g.onEngine("exec", true, func(r *remote) error { return r.exec(cmd.Context(), args[0], req, o.detach) })
		},
	}
	o.addFlags(cmd.Flags())
	return cmd
}

func (o *execOptions) addFlags(f *pflag.FlagSet) {
	// Flags after CONTAINER belong to the command.
	f.SetInterspersed(false)
	f.BoolVarP(&o.interactive, "interactive", "i", false, "keep stdin open and stream it to the command")
	f.BoolVarP(&o.tty, "tty", "t", false, "allocate a terminal")
	f.BoolVarP(&o.detach, "detach", "d", false, "run the command in the background and print nothing")
	f.StringArrayVarP(&o.env, "env", "e", nil, "set an environment variable (KEY=VALUE; KEY alone takes it from this environment)")
	f.StringVarP(&o.workdir, "workdir", "w", "", "working directory inside the container")
	f.StringVarP(&o.user, "user", "u", "", "user to run as: a name or UID, with an optional :group or :GID (names are the container's)")
	f.BoolVar(&o.privileged, "privileged", false, "give the command every capability (the container's seccomp filter stays)")
}

// request is the exec's wire form. A detached exec attaches nothing, as
// docker exec -d asks; an attached one always gets stdout and stderr.
func (o *execOptions) request(cmd []string) (client.ExecCreateOptions, error) {
	if cmd[0] == "" {
		return client.ExecCreateOptions{}, errors.New("no command to run: give CONTAINER COMMAND [ARG...]")
	}
	return client.ExecCreateOptions{
		Cmd: cmd, Env: resolveEnv(o.env), WorkingDir: o.workdir, User: o.user, TTY: o.tty, Privileged: o.privileged,
		AttachStdin:  o.interactive && !o.detach,
		AttachStdout: !o.detach, AttachStderr: !o.detach,
	}, nil
}

// exec creates the exec, then either starts it detached or attaches to it
// until its output ends, and returns its exit status from inspect, as the
// docker CLI does. A command that could not be run reports why in its
// stderr stream and ends with 126 or 127.
func (r *remote) exec(ctx context.Context, ref string, req client.ExecCreateOptions, detach bool) error {
	if !detach && req.TTY {
		rows, cols, err := terminalSize(req.TTY, req.AttachStdin)
		if err != nil {
			return errNotATTY // status 1 here, as docker exec exits (run: 125)
		}
		req.ConsoleSize = client.ConsoleSize{Height: uint(rows), Width: uint(cols)}
	}
	created, err := r.api.ExecCreate(ctx, ref, req)
	if err != nil {
		return r.fail(err)
	}
	id := created.ID
	if detach {
		_, err := r.api.ExecStart(ctx, id, client.ExecStartOptions{Detach: true, TTY: req.TTY})
		return r.fail(err)
	}
	at, err := r.api.ExecAttach(ctx, id, client.ExecAttachOptions{TTY: req.TTY, ConsoleSize: req.ConsoleSize})
	if err != nil {
		return r.fail(err)
	}
	defer at.Close()
	// The detach keys (ctrl-p ctrl-q) end the session and leave the
	// process running, as docker exec -it's do; a process in vmctl's own
	// engine would die with it, so there they are plain keys.
	outputDone, detached := streamIODetach(at.HijackedResponse, req.TTY, req.AttachStdin, !r.inProcess)
	received := func() syscall.Signal { return 0 }
	if req.TTY && req.AttachStdin {
		// Raw mode: a signal must end the session, not vmctl outright.
		sigCtx, got, stop := endOnSignal(ctx)
		defer stop()
		received = got
		context.AfterFunc(sigCtx, func() {
			if got() != 0 {
				at.Close() // ends the output, so restore runs below
			}
		})
	}
	restore := userTerminal(req.TTY, req.AttachStdin, func(rows, cols uint16) {
		r.api.ExecResize(ctx, id, client.ExecResizeOptions{Height: uint(rows), Width: uint(cols)})
	})
	select {
	case <-outputDone:
	case <-detached:
		restore()
		return nil
	}
	restore()
	if sig := received(); sig != 0 {
		return signalStatus(sig)
	}
	res, err := r.api.ExecInspect(ctx, id, client.ExecInspectOptions{})
	if err != nil {
		return r.fail(err)
	}
	if res.Running {
		// The stream ended without the process: the daemon lost it.
		return fmt.Errorf("the exec's output ended while it still runs (exec %s)", shortContainerID(id))
	}
	if res.ExitCode != 0 {
		return &statusError{code: res.ExitCode}
	}
	return nil
}
