// Command direct runs one container the way vmctl did before every command
// went through the Docker Engine API: it drives the engine's container
// service in-process, with no HTTP in between. It exists only as the peer
// of `make bench`'s inprocess section, which measures what serving the API
// inside vmctl's own process costs a run.
//
//	direct -data-root DIR -exec-root DIR IMAGE CMD...
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/vmctl/vmctl/engine"
	"github.com/vmctl/vmctl/engine/services/containersvc"
)

func main() {
	dataRoot := flag.String("data-root", "", "engine data root")
	execRoot := flag.String("exec-root", "", "engine exec root")
	flag.Parse()
	if flag.NArg() < 1 || *dataRoot == "" || *execRoot == "" {
		fmt.Fprintln(os.Stderr, "usage: direct -data-root DIR -exec-root DIR IMAGE [CMD...]")
		os.Exit(2)
	}
	code, err := run(*dataRoot, *execRoot, flag.Arg(0), flag.Args()[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "direct: "+err.Error())
		os.Exit(125)
	}
	os.Exit(code)
}

// run is `vmctl run --rm IMAGE CMD...` without the API: create, start
// with this process's stdio, wait, remove.
func run(dataRoot, execRoot, image string, cmd []string) (int, error) {
	ctx := context.Background()
	e, err := engine.New(engine.Config{DataRoot: dataRoot, ExecRoot: execRoot})
	if err != nil {
		return 0, err
	}
	ctrs := e.Services().Containers
	c, err := ctrs.Create(ctx, containersvc.CreateOptions{Image: image, Cmd: cmd, Hypervisor: "auto", AutoRemove: true})
	if err != nil {
		return 0, err
	}
	defer ctrs.Remove(context.Background(), c.ID, containersvc.RemoveOptions{Force: true})
	if err := ctrs.Start(ctx, c.ID, containersvc.Stdio{Stdout: os.Stdout, Stderr: os.Stderr}); err != nil {
		return 0, err
	}
	st, err := ctrs.Wait(ctx, c.ID)
	if err != nil {
		return 0, err
	}
	return st.Code, nil
}
