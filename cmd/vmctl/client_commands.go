package main

// Commands that act on containers kept by a daemon: logs, stop, start,
// kill. They need -H/VMCTL_HOST: without a daemon a container lives only
// as long as the `vmctl run` that started it, so there is nothing for them
// to act on. inspect is here too; it also reads the in-process records.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
	"github.com/spf13/cobra"
)

func newLogsCommand(g *globalOptions) *cobra.Command {
	var follow bool
	var tail, since, until string
	cmd := &cobra.Command{
		Use:   "logs [-f] [--tail N] [--since T] [--until T] CONTAINER",
		Short: "Show a container's output (-f of a running container needs vmctld)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if tail != "all" {
				if n, err := strconv.Atoi(tail); err != nil || n < 0 {
					return &statusError{code: 125, err: fmt.Errorf("invalid --tail %q: want a number of lines or all", tail)}
				}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			o := client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true, Follow: follow, Tail: tail, Since: since, Until: until}
			return g.withEngine("logs -f", false, func(r *remote) error { return r.logs(ctx, args[0], o) })
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new output until the container stops")
	cmd.Flags().StringVarP(&tail, "tail", "n", "all", "number of lines to show from the end")
	cmd.Flags().StringVar(&since, "since", "", "only output written since a time (RFC 3339, or seconds since the epoch) or a duration ago (e.g. 10m)")
	cmd.Flags().StringVar(&until, "until", "", "only output written before a time or a duration ago")
	return cmd
}

func (r *remote) logs(ctx context.Context, ref string, o client.ContainerLogsOptions) error {
	follow := o.Follow
	c, err := r.api.ContainerInspect(ctx, ref, client.ContainerInspectOptions{})
	if err != nil {
		return r.fail(err)
	}
	// The in-process engine ends with this command: a running
	// container's later output is the daemon's that runs it.
	if follow && r.inProcess && c.Container.State != nil && c.Container.State.Running {
		return needsDaemon("logs -f of a running container", r.why)
	}
	rc, err := r.api.ContainerLogs(ctx, c.Container.ID, o)
	if err != nil {
		return r.fail(err)
	}
	defer rc.Close()
	// A container with a terminal has one raw stream; others are framed.
	if c.Container.Config != nil && c.Container.Config.Tty {
		_, err = io.Copy(os.Stdout, rc)
	} else {
		_, err = stdcopy.StdCopy(os.Stdout, os.Stderr, rc)
	}
	if err != nil && ctx.Err() == nil {
		return r.fail(err)
	}
	return nil
}

func newStopCommand(g *globalOptions) *cobra.Command {
	return newTimedCommand(g, "stop", "Stop running containers, then SIGKILL after a timeout (needs vmctld)",
		func(ctx context.Context, r *remote, ref string, timeout *int) error {
			_, err := r.api.ContainerStop(ctx, ref, client.ContainerStopOptions{Timeout: timeout})
			return err
		})
}

func newKillCommand(g *globalOptions) *cobra.Command {
	var sig string
	cmd := &cobra.Command{
		Use:   "kill [-s SIGNAL] CONTAINER [CONTAINER...]",
		Short: "Send a signal to running containers (needs vmctld)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return eachContainer(cmd.Context(), g, "kill", args, func(ctx context.Context, r *remote, ref string) error {
				_, err := r.api.ContainerKill(ctx, ref, client.ContainerKillOptions{Signal: sig})
				return err
			})
		},
	}
	cmd.Flags().StringVarP(&sig, "signal", "s", "KILL", "signal to send: a name such as TERM or a number")
	return cmd
}

func newPauseCommand(g *globalOptions, unpause bool) *cobra.Command {
	name, short := "pause", "Freeze running containers: their VMs' vCPUs stop (needs vmctld)"
	if unpause {
		name, short = "unpause", "Let paused containers run again (needs vmctld)"
	}
	return &cobra.Command{
		Use:   name + " CONTAINER [CONTAINER...]",
		Short: short,
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return eachContainer(cmd.Context(), g, name, args, func(ctx context.Context, r *remote, ref string) error {
				if unpause {
					_, err := r.api.ContainerUnpause(ctx, ref, client.ContainerUnpauseOptions{})
					return err
				}
				_, err := r.api.ContainerPause(ctx, ref, client.ContainerPauseOptions{})
				return err
			})
		},
	}
}

func newUpdateCommand(g *globalOptions) *cobra.Command {
	var restart, memory, cpus string
	cmd := &cobra.Command{
		Use:   "update [--restart POLICY] [--memory M] [--cpus N] CONTAINER [CONTAINER...]",
		Short: "Change containers' restart policy, and the memory and CPUs of stopped ones (needs vmctld)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o := runOptions{restart: restart, memory: memory, cpus: cpus, hypervisor: "auto", pull: "missing"}
			req, err := o.request("x", nil)
			if err != nil {
				return &statusError{code: 125, err: err}
			}
			u := client.ContainerUpdateOptions{Resources: &container.Resources{Memory: req.HostConfig.Memory, NanoCPUs: req.HostConfig.NanoCPUs}}
			if restart != "" {
				p := req.HostConfig.RestartPolicy
				if restart == "no" {
					p.Name = container.RestartPolicyDisabled
				}
				u.RestartPolicy = &p
			}
			return eachContainer(cmd.Context(), g, "update", args, func(ctx context.Context, r *remote, ref string) error {
				_, err := r.api.ContainerUpdate(ctx, ref, u)
				return err
			})
		},
	}
	cmd.Flags().StringVar(&restart, "restart", "", "restart policy: no, always, unless-stopped, on-failure[:MAX-RETRIES]")
	cmd.Flags().StringVarP(&memory, "memory", "m", "", "memory limit (e.g. 256m) of a stopped container")
	cmd.Flags().StringVar(&cpus, "cpus", "", "number of CPUs of a stopped container")
	return cmd
}

func newRenameCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "rename CONTAINER NEW_NAME",
		Short: "Rename a container (needs vmctld)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := g.connect("rename", true)
			if err != nil {
				return err
			}
			defer r.Close()
			if _, err := r.api.ContainerRename(cmd.Context(), args[0], client.ContainerRenameOptions{NewName: args[1]}); err != nil {
				return r.fail(err)
			}
			return nil
		},
	}
}

// eachContainer applies op to every ref, printing each one that
// succeeded and one line per failure, as docker does; any failure makes
// the exit status 1.
func eachContainer(ctx context.Context, g *globalOptions, name string, refs []string, op func(context.Context, *remote, string) error) error {
	r, err := g.connect(name, true)
	if err != nil {
		return err
	}
	defer r.Close()
	return forEach(refs, func(ref string) error {
		if err := op(ctx, r, ref); err != nil {
			return r.fail(err)
		}
		fmt.Println(ref)
		return nil
	})
}

func newStartCommand(g *globalOptions) *cobra.Command {
	var attach, interactive bool
	cmd := &cobra.Command{
		Use:   "start [-a] [-i] CONTAINER",
		Short: "Start a stopped container, keeping its writable layer (needs vmctld)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			// docker start exits 1 when the start is refused, even for a
			// command that is not found (run's 125/126/127 are run's own).
			return g.onEngine("start", true, func(r *remote) error {
				if !attach && !interactive {
					if _, err := r.api.ContainerStart(cmd.Context(), args[0], client.ContainerStartOptions{}); err != nil {
						return r.fail(err)
					}
					fmt.Println(args[0])
					return nil
				}
				return r.startAttached(cmd.Context(), args[0], interactive)
			})
		},
	}
	cmd.Flags().BoolVarP(&attach, "attach", "a", false, "attach to the container's output and end with its exit status")
	cmd.Flags().BoolVarP(&interactive, "interactive", "i", false, "attach stdin too (implies -a; the container must have been created with -i)")
	return cmd
}

// startAttached is docker start -a [-i]: attach, wait for the next exit,
// start, carry the streams until the run ends and return its status.
func (r *remote) startAttached(ctx context.Context, ref string, interactive bool) error {
	c, err := r.api.ContainerInspect(ctx, ref, client.ContainerInspectOptions{})
	if err != nil {
		return r.fail(err)
	}
	id := c.Container.ID
	cfg := c.Container.Config
	tty := cfg != nil && cfg.Tty
	stdin := interactive && cfg != nil && cfg.OpenStdin
	if _, _, err := terminalSize(tty, stdin); err != nil {
		return errNotATTY
	}
	return r.attachSession(ctx, id, tty, stdin, true, container.WaitConditionNextExit, func() error {
		_, err := r.api.ContainerStart(ctx, id, client.ContainerStartOptions{})
		return r.fail(err)
	})
}

func newInspectCommand(g *globalOptions) *cobra.Command {
	var format, kind string
	cmd := &cobra.Command{
		Use:   "inspect [-f TEMPLATE] CONTAINER|IMAGE [...]",
		Short: "Show the JSON record of containers or images",
		Long: `Show the JSON record of containers or images, as docker inspect does.

-f/--format takes a Go template run once per object, over the API's
fields ({{.State.Status}}, {{.Config.Image}}, {{json .Config}}) or the
JSON keys ({{.Id}}); json prints one JSON object per line.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch kind {
			case "", "container", "image":
			default:
				return &statusError{code: 125, err: fmt.Errorf("invalid --type %q: want container or image", kind)}
			}
			r, err := g.connect("inspect", false)
			if err != nil {
				return err
			}
			defer r.Close()
			var objs []inspected
			failed := forEach(args, func(ref string) error {
				obj, err := r.inspect(cmd.Context(), ref, kind)
				if err == nil {
					objs = append(objs, obj)
				}
				return err
			})
			if failed != nil && len(objs) == 0 && client.IsErrConnectionFailed(failed) {
				return failed
			}
			if err := writeInspect(os.Stdout, objs, format); err != nil {
				return err
			}
			return failed
		},
	}
	cmd.Flags().StringVarP(&format, "format", "f", "", "format each object with a Go template, or json")
	cmd.Flags().StringVar(&kind, "type", "", "only look for a container or an image")
	return cmd
}

// inspect returns ref's record: a container's if there is one by that
// name or ID (and kind allows), else an image's, as docker inspect looks
// them up.
func (r *remote) inspect(ctx context.Context, ref, kind string) (inspected, error) {
	if kind != "image" {
		c, err := r.api.ContainerInspect(ctx, ref, client.ContainerInspectOptions{})
		if err == nil {
			var buf bytes.Buffer
			if json.Compact(&buf, c.Raw) == nil {
				return inspected{typed: c.Container, raw: buf.Bytes()}, nil
			}
			raw, err := json.Marshal(c.Container)
			return inspected{typed: c.Container, raw: raw}, err
		}
		if !errdefs.IsNotFound(err) {
			return inspected{}, r.fail(err)
		}
		if kind == "container" {
			return inspected{}, &daemonError{msg: "no such container: " + ref, err: err}
		}
	}
	img, err := r.api.ImageInspect(ctx, ref)
	if err != nil {
		if errdefs.IsNotFound(err) {
			what := "container or image"
			if kind == "image" {
				what = "image"
			}
			return inspected{}, &daemonError{msg: "no such " + what + ": " + ref, err: err}
		}
		return inspected{}, r.fail(err)
	}
	raw, err := json.Marshal(img.InspectResponse)
	return inspected{typed: img.InspectResponse, raw: raw}, err
}
