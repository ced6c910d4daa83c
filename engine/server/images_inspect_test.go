package server

import (
	"bytes"
	"encoding/json"
	"slices"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/moby/moby/api/types/image"

	"github.com/vmctl/vmctl/engine/images"
)

// Image inspect shows the image config (what docker inspect -f
// '{{.Config.Cmd}}' reads) and the layers' diff IDs.
func TestImageInspect(t *testing.T) {
	s := newTestServer(t)
	img, err := mutate.Config(randomImage(t), v1.Config{
		Env: []string{"PATH=/bin", "A=1"}, Entrypoint: []string{"/bin/app"}, Cmd: []string{"--serve"},
		WorkingDir: "/srv", User: "1000:1000", Labels: map[string]string{"team": "x"}, StopSignal: "SIGINT",
	})
	if err != nil {
		t.Fatal(err)
	}
	if code, body, _ := call(t, s, "POST", "/images/load", bytes.NewReader(archiveOf(t, images.NamedImage{Tag: "app:1", Image: img}))); code != 200 {
		t.Fatalf("load = %d %s", code, body)
	}
	code, body, _ := call(t, s, "GET", "/v1.41/images/app:1/json", nil)
	if code != 200 {
		t.Fatalf("inspect = %d %s", code, body)
	}
	var got image.InspectResponse
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	if got.ID != imageID(t, img) || !slices.Equal(got.RepoTags, []string{"app:1"}) {
		t.Errorf("inspect ID %s tags %v", got.ID, got.RepoTags)
	}
	c := got.Config
	if c == nil {
		t.Fatalf("inspect has no Config: %s", body)
	}
	if !slices.Equal(c.Env, []string{"PATH=/bin", "A=1"}) || !slices.Equal(c.Entrypoint, []string{"/bin/app"}) ||
		!slices.Equal(c.Cmd, []string{"--serve"}) || c.WorkingDir != "/srv" || c.User != "1000:1000" ||
		c.Labels["team"] != "x" || c.StopSignal != "SIGINT" {
		t.Errorf("inspect Config = %+v", c)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, d := range cf.RootFS.DiffIDs {
		want = append(want, d.String())
	}
	if got.RootFS.Type != "layers" || !slices.Equal(got.RootFS.Layers, want) {
		t.Errorf("inspect RootFS = %+v, want layers %v", got.RootFS, want)
	}
}
