package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
)

// createRequest is the wire form of the run options.
func (o *runOptions) createRequest(image string, cmdArgs []string) (client.ContainerCreateOptions, error) {
	co, err := o.createOptions(image, cmdArgs)
	if err != nil {
		return client.ContainerCreateOptions{}, err
	}
	if o.hypervisor != "auto" {
		// The daemon picks its hypervisor; the API has no field for it.
		return client.ContainerCreateOptions{}, fmt.Errorf("--hypervisor %s is not available with -H/VMCTL_HOST: the daemon chooses its hypervisor", o.hypervisor)
	}
	cfg := &container.Config{
		Image: co.Image, Cmd: co.Cmd, Entrypoint: co.Entrypoint, Env: co.Env, WorkingDir: co.WorkingDir,
		User: co.User, Hostname: co.Hostname, Tty: co.Tty, OpenStdin: co.OpenStdin, Labels: co.Labels,
		// docker run -i: stdin closes with the first attached client's EOF.
		StdinOnce:    co.OpenStdin,
		AttachStdin:  co.OpenStdin,
		AttachStdout: true, AttachStderr: true,
	}
	// The daemon parses -v itself; createOptions checked it already.
	hc := &container.HostConfig{AutoRemove: co.AutoRemove, Binds: o.volumes}
	hc.Memory = co.MemoryBytes
	hc.NanoCPUs = co.NanoCPUs
	return client.ContainerCreateOptions{Config: cfg, HostConfig: hc, Name: co.Name}, nil
}

// remoteRun is `docker run` against a daemon: create (pulling a missing
// image), attach, wait, start, then forward signals and terminal size
// until the container exits.
func remoteRun(ctx context.Context, g *globalOptions, o *runOptions, image string, cmdArgs []string) error {
	req, err := o.createRequest(image, cmdArgs)
	if err != nil {
		return &statusError{code: 125, err: err}
	}
	// A detached run reads no keys: -d -it from a script without a
	// terminal is fine, as docker run checks the terminal only when it
	// attaches.
	if !o.detach {
		rows, cols, err := terminalSize(o.tty, o.interactive)
		if err != nil {
			return err
		}
		if rows > 0 && cols > 0 {
			req.HostConfig.ConsoleSize = [2]uint{uint(rows), uint(cols)}
		}
	}
	r, err := g.remote()
	if err != nil {
		return err
	}
	defer r.Close()

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
			r.api.ContainerRemove(context.Background(), id, client.ContainerRemoveOptions{Force: true})
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
	// With --rm the daemon removes the container as it exits; waiting for
	// the removal means the record is gone when vmctl returns.
	cond := container.WaitConditionNextExit
	if o.rm {
		cond = container.WaitConditionRemoved
	}
	wait := r.api.ContainerWait(ctx, id, client.ContainerWaitOptions{Condition: cond})

	outputDone := streamIO(attach.HijackedResponse, o.tty, o.interactive)

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

	return r.waitExit(wait.Result, wait.Error, outputDone)
}

// create creates the container of req, first pulling its image as pull
// ("missing", "never", "always") asks, with the progress on stderr as
// docker run and docker create show it. Errors are the daemon's one line.
func (r *remote) create(ctx context.Context, req client.ContainerCreateOptions, image, pull string) (client.ContainerCreateResult, error) {
	if pull == "always" {
		if err := r.pull(ctx, image, os.Stderr); err != nil {
			return client.ContainerCreateResult{}, err
		}
	}
	created, err := r.api.ContainerCreate(ctx, req)
	if err != nil && errdefs.IsNotFound(err) && pull == "missing" {
		fmt.Fprintf(os.Stderr, "Unable to find image '%s' locally\n", image)
		if err := r.pull(ctx, image, os.Stderr); err != nil {
			return client.ContainerCreateResult{}, err
		}
		created, err = r.api.ContainerCreate(ctx, req)
	}
	return created, r.fail(err)
}

// waitExit waits for the container's exit status, then for the attach
// stream to end (the daemon ends it after the last output, so all of it is
// printed before returning), and turns the status into vmctl's own.
func (r *remote) waitExit(result <-chan container.WaitResponse, errc <-chan error, outputDone <-chan struct{}) error {
	var status container.WaitResponse
	select {
	case status = <-result:
	case err := <-errc:
		return r.fail(err)
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

// resize and kill are the daemon's side of forwardResize and forwardSignals.
func (r *remote) resize(ctx context.Context, id string, rows, cols uint16) {
	r.api.ContainerResize(ctx, id, client.ContainerResizeOptions{Height: uint(rows), Width: uint(cols)})
}

func (r *remote) kill(ctx context.Context, id string, sig syscall.Signal) {
	r.api.ContainerKill(ctx, id, client.ContainerKillOptions{Signal: fmt.Sprint(int(sig))})
}
