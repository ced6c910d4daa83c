package engine

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/vmctl/vmctl/engine/build"
	"github.com/vmctl/vmctl/engine/services/containersvc"
)

// buildLabel marks the containers builds run their steps in (ps -a shows
// them while a build runs, as dockerd's intermediate containers).
const buildLabel = "io.vmctl.build"

// buildRunner is build.Runner over the container service: a build
// container is a container of the step's image that runs nothing of its
// own (CreateOptions.Pause) and runs each RUN step as an exec; its changes
// come out of the guest through the agent.
type buildRunner struct{ ctrs *containersvc.Service }

func (b buildRunner) Start(ctx context.Context, image, network string) (build.Container, error) {
	mode := containersvc.NetworkDefault
	switch network {
	case "", "default", "bridge":
	case "none":
		mode = containersvc.NetworkNone
	default:
		return nil, fmt.Errorf("network %q: builds take default or none", network)
	}
	c, err := b.ctrs.Create(ctx, containersvc.CreateOptions{Image: image, Pause: true, NetworkMode: mode,
		Labels: map[string]string{buildLabel: "step"}})
	if err != nil {
		return nil, err
	}
	bc := &buildContainer{ctrs: b.ctrs, id: c.ID}
	if err := b.ctrs.Start(ctx, c.ID, containersvc.Stdio{}); err != nil {
		bc.Remove(context.WithoutCancel(ctx))
		return nil, err
	}
	return bc, nil
}

type buildContainer struct {
	ctrs     *containersvc.Service
	id       string
	exported bool
}

func (c *buildContainer) Run(ctx context.Context, p build.Process, out io.Writer) (int, error) {
	eid, err := c.ctrs.ExecCreate(c.id, containersvc.ExecOptions{Cmd: p.Args, Env: p.Env, WorkingDir: p.Dir, User: p.User,
		AttachStdout: true, AttachStderr: true})
	if err != nil {
		return 0, err
	}
	if err := c.ctrs.ExecStart(ctx, eid, containersvc.Stdio{Stdout: out, Stderr: out}, false); err != nil {
		var ce *containersvc.CommandError
		if errors.As(err, &ce) {
			fmt.Fprintln(out, ce.Error())
			return ce.ExitCode, nil
		}
		return 0, err
	}
	info, err := c.ctrs.ExecInspect(eid)
	if err != nil {
		return 0, err
	}
	if info.ExitCode == nil {
		return 0, errors.New("the step's process ended without an exit status")
	}
	return *info.ExitCode, nil
}

func (c *buildContainer) Changes(ctx context.Context, w io.Writer, limit int64) error {
	_, err := c.ctrs.ExportChanges(ctx, c.id, c.exported, w, limit)
	c.exported = true
	return err
}

func (c *buildContainer) Remove(ctx context.Context) error {
	return c.ctrs.Remove(ctx, c.id, containersvc.RemoveOptions{Force: true})
}
