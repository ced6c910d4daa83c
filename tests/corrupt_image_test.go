package tests

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// A pulled image whose config lists a wrong diff ID for a layer: the pull
// succeeds (it checks blobs by digest and size; diff IDs are checked where
// the layers are unpacked), and every run of it fails with one line that
// names the layer and says what to do, leaving no container and no disk.
func TestCorruptImageDiffID(t *testing.T) {
	e := e2e(t)
	reg := startRegistry(t, "", "")
	dc := withDockerConfig(t)
	before := e.containerCount(t)
	baseRef := reg.host + "/e2e/base:1"
	ref := reg.host + "/e2e/corrupt:1"
	t.Cleanup(func() {
		e.run(t, "rmi", ref)
		e.run(t, "rmi", baseRef)
	})
	e.mustRunEnv(t, dc, 0, "tag", "busybox", baseRef)
	e.mustRunEnv(t, dc, 0, "push", baseRef)
	newLayer, _ := pushChildImage(t, baseRef, ref, "hello\n")

	// Rewrite the pushed image's config: the new layer's diff ID is wrong.
	r, err := name.ParseReference(ref, name.Insecure)
	must(t, err)
	img, err := remote.Image(r)
	must(t, err)
	cf, err := img.ConfigFile()
	must(t, err)
	cf = cf.DeepCopy()
	last := len(cf.RootFS.DiffIDs) - 1
	good := cf.RootFS.DiffIDs[last]
	cf.RootFS.DiffIDs[last] = cf.RootFS.DiffIDs[0]
	bad, err := mutate.ConfigFile(img, cf)
	must(t, err)
	must(t, remote.Write(r, bad))

	e.mustRunEnv(t, dc, 0, "pull", "-q", ref)
	disksBefore := dirNames(t, filepath.Join(e.dataRoot, "disks"))
	tmpBefore := dirNames(t, filepath.Join(e.dataRoot, "tmp"))
	want := "layer " + strconv.Itoa(last+1) + " (" + newLayer.String() + ") does not match its diff ID " +
		cf.RootFS.DiffIDs[last].String() + " (it unpacks to " + good.String() + "): the image is corrupt; remove it and pull it again"
	for try := 1; try <= 2; try++ {
		res := e.runWith(t, nil, dc, "run", "--rm", ref, "true")
		if res.code == 0 {
			t.Fatalf("try %d: run of the corrupt image succeeded", try)
		}
		oneLine(t, res, want)
		t.Logf("try %d: exit %d: %s", try, res.code, res.stderr)
	}
	// The lock file that serialises builds of a disk stays, as for every disk.
	for _, n := range dirNames(t, filepath.Join(e.dataRoot, "disks")) {
		if !slices.Contains(disksBefore, n) && !strings.HasSuffix(n, ".lock") {
			t.Errorf("the corrupt image left a disk or scratch space: %s", n)
		}
	}
	for _, n := range dirNames(t, filepath.Join(e.dataRoot, "tmp")) {
		if !slices.Contains(tmpBefore, n) {
			t.Errorf("the corrupt image left scratch space: %s", n)
		}
	}
	e.checkClean(t, before)
}

// dirNames lists the names in dir (none if it does not exist).
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}
