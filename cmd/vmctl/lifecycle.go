package main

// docker's lifecycle commands: create, restart, wait and attach. Like start
// and stop they need a daemon: without one a container lives only as long
// as the `vmctl run` that started it, so there is nothing to restart, wait
// for or attach to, and a created container could never be started.

import (
	"context"
	"errors"
	"fmt"
	"syscall"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
	"github.com/spf13/cobra"
)

func newCreateCommand(g *globalOptions) *cobra.Command {
	o := &runOptions{}
	cmd := &cobra.Command{
		Use:   "create [OPTIONS] IMAGE [COMMAND] [ARG...]",
		Short: "Create a container without starting it, and print its ID (needs vmctld)",
		Long: `Create a container without starting it, and print its ID, as docker create does.

It takes run's options; an image that is not here is pulled first, as run
does. --rm makes the daemon remove the container when a later start's run
ends. Start it with vmctl start [-a].`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req, err := o.request(args[0], args[1:])
			if err != nil {
				return &statusError{code: 125, err: err}
			}
			return g.onEngine("create", true, func(r *remote) error {
				created, err := r.create(cmd.Context(), req, args[0], o.pull)
				if err == nil {
					fmt.Println(created.ID)
				}
				return err
			})
		},
	}
	o.addFlags(cmd.Flags())
	return cmd
}

func newRestartCommand(g *globalOptions) *cobra.Command {
	return newTimedCommand(g, "restart", "Stop and start containers, keeping their writable layers (needs vmctld)",
		func(ctx context.Context, r *remote, ref string, timeout *int) error {
			_, err := r.api.ContainerRestart(ctx, ref, client.ContainerRestartOptions{Timeout: timeout})
			return err
		})
}

// newTimedCommand builds stop and restart: both take -t SECONDS (nil when
// not given, so that the daemon's default applies) and act on each
// container in turn, printing its name.
func newTimedCommand(g *globalOptions, name, short string, op func(ctx context.Context, r *remote, ref string, timeout *int) error) *cobra.Command {
	var timeout int
	cmd := &cobra.Command{
		Use:   name + " [-t SECONDS] CONTAINER [CONTAINER...]",
		Short: short,
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var t *int
			if cmd.Flags().Changed("time") {
				t = &timeout
			}
			return eachContainer(cmd.Context(), g, name, args, func(ctx context.Context, r *remote, ref string) error {
				return op(ctx, r, ref, t)
			})
		},
	}
	cmd.Flags().IntVarP(&timeout, "time", "t", 10, "seconds to wait for the stop before killing the container")
	return cmd
}

func newWaitCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "wait CONTAINER [CONTAINER...]",
		Short: "Wait until containers stop, and print their exit codes (needs vmctld)",
		Long: `Wait until containers stop, and print their exit codes, one a line.

A container that is not running answers at once with its last exit code.
As with docker wait, the exit status is 0 whatever the codes are, and 1
when a container could not be waited for.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.onEngine("wait", true, func(r *remote) error {
				return forEach(args, func(ref string) error { return r.wait(cmd.Context(), ref) })
			})
		},
	}
}

// wait prints ref's exit code once it is not running.
func (r *remote) wait(ctx context.Context, ref string) error {
	w := r.api.ContainerWait(ctx, ref, client.ContainerWaitOptions{Condition: container.WaitConditionNotRunning})
	select {
	case res := <-w.Result:
		if res.Error != nil && res.Error.Message != "" {
			return errors.New(res.Error.Message)
		}
		fmt.Println(res.StatusCode)
		return nil
	case err := <-w.Error:
		return r.fail(err)
	}
}

func newAttachCommand(g *globalOptions) *cobra.Command {
	var noStdin, sigProxy bool
	cmd := &cobra.Command{
		Use:   "attach [--no-stdin] [--sig-proxy=false] CONTAINER",
		Short: "Attach to a running container's output (and input) until it exits (needs vmctld)",
		Long: `Attach this terminal to a running container until it exits, as docker attach does.

Output from now on is shown; stdin goes to the container if it was
created with -i (unless --no-stdin). The exit status is the container's.
Without a tty, signals vmctl gets are sent to the container (--sig-proxy);
with one, Ctrl-C reaches the container as a key. docker's detach keys
(Ctrl-P Ctrl-Q) are not supported: end the attach by ending the container
or, without a tty, with a signal when --sig-proxy=false.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.onEngine("attach", true, func(r *remote) error { return r.attach(cmd.Context(), args[0], !noStdin, sigProxy) })
		},
	}
	cmd.Flags().BoolVar(&noStdin, "no-stdin", false, "do not attach stdin")
	cmd.Flags().BoolVar(&sigProxy, "sig-proxy", true, "send the signals vmctl gets to the container (without a tty)")
	return cmd
}

// errAttachStopped is docker attach's refusal, in docker's words.
var errAttachStopped = errors.New("you cannot attach to a stopped container, start it first")

// attach is docker attach: the running container's streams until it
// exits, then its exit status. withStdin attaches stdin if the container
// has one open; sigProxy sends it the signals vmctl gets (without a tty).
func (r *remote) attach(ctx context.Context, ref string, withStdin, sigProxy bool) error {
	c, err := r.api.ContainerInspect(ctx, ref, client.ContainerInspectOptions{})
	if err != nil {
		return r.fail(err)
	}
	if c.Container.State == nil || !c.Container.State.Running {
		return errAttachStopped
	}
	id := c.Container.ID
	cfg := c.Container.Config
	tty := cfg != nil && cfg.Tty
	stdin := withStdin && cfg != nil && cfg.OpenStdin
	if _, _, err := terminalSize(tty, stdin); err != nil {
		return errNotATTY // status 1, as docker attach exits
	}
	// The wait is registered after the attach, so no output is missed; a
	// container that exits in between answers at once with its code.
	return r.attachSession(ctx, id, tty, stdin, sigProxy, container.WaitConditionNotRunning, nil)
}

// attachSession carries a container's streams for attach and start -a:
// it attaches (stdin too if asked), waits for cond, runs start if given,
// sets up the user's terminal for a tty and proxies signals without one
// (docker does not with a tty: the keys that make them reach the
// container's terminal), and returns the container's exit status.
func (r *remote) attachSession(ctx context.Context, id string, tty, stdin, sigProxy bool, cond container.WaitCondition, start func() error) error {
	at, err := r.api.ContainerAttach(ctx, id, client.ContainerAttachOptions{Stream: true, Stdin: stdin, Stdout: true, Stderr: true})
	if err != nil {
		return r.fail(err)
	}
	defer at.Close()
	// In raw mode (a tty fed by stdin) no signal is forwarded; one that
	// comes ends the wait, and the session returns through restore.
	waitCtx, received := ctx, func() syscall.Signal { return 0 }
	if tty && stdin {
		sigCtx, got, stop := endOnSignal(ctx)
		defer stop()
		waitCtx, received = sigCtx, got
	}
	wait := r.api.ContainerWait(waitCtx, id, client.ContainerWaitOptions{Condition: cond})
	outputDone, detached := streamIODetach(at.HijackedResponse, tty, stdin, !r.inProcess)
	restore := userTerminal(tty, stdin, func(rows, cols uint16) { r.resize(ctx, id, rows, cols) })
	defer restore()
	if start != nil {
		if err := start(); err != nil {
			return err
		}
	}
	if sigProxy && !tty {
		stop := forwardSignals(func(sig syscall.Signal) { r.kill(ctx, id, sig) })
		defer stop()
	}
	err = r.waitExit(wait.Result, wait.Error, outputDone, detached)
	if sig := received(); sig != 0 {
		return signalStatus(sig)
	}
	return err
}
