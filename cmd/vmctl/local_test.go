package main

import (
	"context"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/client"
)

// Without -H the API client talks to the engine served in this process.
func TestInProcessAPI(t *testing.T) {
	dir := t.TempDir()
	g := &globalOptions{dataRoot: dir + "/data", execRoot: dir + "/exec"}
	r, done, err := g.api()
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	ctx := context.Background()
	list, err := r.api.ContainerList(ctx, client.ContainerListOptions{All: true})
	if err != nil || len(list.Items) != 0 {
		t.Fatalf("ContainerList = %v, %v; want an empty list", list.Items, err)
	}
	_, err = r.api.ContainerList(ctx, client.ContainerListOptions{Filters: client.Filters{}.Add("colour", "red")})
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "invalid filter 'colour'") {
		t.Errorf("ContainerList with a bad filter = %v, want invalid filter 'colour'", err)
	}
	if _, err := r.api.ContainerInspect(ctx, "nosuch", client.ContainerInspectOptions{}); !errdefs.IsNotFound(err) {
		t.Errorf("ContainerInspect(nosuch) = %v, want not found", err)
	}
}
