package imagesvc

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/vmctl/vmctl/engine/events"
	"github.com/vmctl/vmctl/engine/images"
)

// fakeDisks records the live images of each prune, failing when fail is set.
type fakeDisks struct {
	prunes [][]string // the IDs of the live images, per call
	fail   bool
}

func (d *fakeDisks) Prune(_ context.Context, live []images.Image) (int, error) {
	if d.fail {
		return 0, errors.New("disk is busy")
	}
	var ids []string
	for _, img := range live {
		ids = append(ids, img.ID)
	}
	d.prunes = append(d.prunes, ids)
	return 1, nil
}

type fixture struct {
	svc    *Service
	bus    *events.Bus
	disks  *fakeDisks
	users  map[string]string // image ID -> container using it
	since  time.Time
	seen   int // events already returned by events
	t      *testing.T
	loaded []v1.Image
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	store, err := images.Open(filepath.Join(t.TempDir(), "images"))
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{bus: events.NewBus(64), disks: &fakeDisks{}, users: map[string]string{},
		since: time.Now().Add(-time.Second), t: t}
	f.svc = New(Config{Store: store, Disks: f.disks, Events: f.bus,
		InUse: func(id string) (string, bool) { c, ok := f.users[id]; return c, ok }})
	return f
}

// load stores a new random image under tags and returns its ID.
func (f *fixture) load(tags ...string) string {
	f.t.Helper()
	img, err := random.Image(1024, 1)
	if err != nil {
		f.t.Fatal(err)
	}
	var named []images.NamedImage
	for _, tag := range tags {
		named = append(named, images.NamedImage{Tag: tag, Image: img})
	}
	if len(named) == 0 {
		named = []images.NamedImage{{Image: img}}
	}
	var buf bytes.Buffer
	if err := images.WriteArchive(&buf, images.FormatDocker, named); err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.svc.Load(context.Background(), &buf); err != nil {
		f.t.Fatal(err)
	}
	h, err := img.ConfigName()
	if err != nil {
		f.t.Fatal(err)
	}
	f.loaded = append(f.loaded, img)
	return h.String()
}

// events returns the events published since the last call, as
// "action id name".
func (f *fixture) events() []string {
	past, sub := f.bus.Subscribe(f.since, nil)
	sub.Close()
	var out []string
	for _, e := range past[f.seen:] {
		if e.Type != events.TypeImage {
			f.t.Errorf("event of type %s", e.Type)
		}
		out = append(out, e.Action+" "+e.ID+" "+e.Attributes["name"])
	}
	f.seen = len(past)
	return out
}

func (f *fixture) wantEvents(want ...string) {
	f.t.Helper()
	if got := f.events(); !slices.Equal(got, want) {
		f.t.Errorf("events = %q, want %q", got, want)
	}
}

func TestLoadTagRemoveEvents(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	id := f.load("app:1")
	untagged := f.load()
	f.wantEvents("load "+id+" app:1", "load "+untagged+" "+untagged)

	if err := f.svc.Tag(ctx, "app:1", "app:2"); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.Tag(ctx, "nosuch:1", "app:3"); !errdefs.IsNotFound(err) {
		t.Errorf("Tag of a missing image = %v, want not found", err)
	}
	f.wantEvents("tag " + id + " app:2")

	res, err := f.svc.Remove(ctx, "app:2", false)
	if err != nil || !slices.Equal(res.Untagged, []string{"app:2"}) || len(res.Deleted) != 0 {
		t.Fatalf("Remove(app:2) = %+v, %v", res, err)
	}
	f.wantEvents("untag " + id + " app:2")
	if len(f.disks.prunes) != 0 {
		t.Errorf("an untag pruned disks: %v", f.disks.prunes)
	}

	res, err = f.svc.Remove(ctx, "app:1", false)
	if err != nil || !slices.Equal(res.Deleted, []string{id}) {
		t.Fatalf("Remove(app:1) = %+v, %v", res, err)
	}
	f.wantEvents("untag "+id+" app:1", "delete "+id+" "+id)
	if len(f.disks.prunes) != 1 || slices.Contains(f.disks.prunes[0], id) {
		t.Errorf("disk prunes %v, want one that keeps the disks of the images left, not of %s", f.disks.prunes, id)
	}

	if _, err := f.svc.Remove(ctx, "app:1", false); !errdefs.IsNotFound(err) {
		t.Errorf("second Remove = %v, want not found", err)
	}
	f.wantEvents()
}

// An image a container uses is not deleted: refused, or with force only
// untagged, and its disk stays.
func TestRemoveInUse(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	id := f.load("app:1")
	f.events()
	f.users[id] = "web"
	if _, err := f.svc.Remove(ctx, "app:1", false); !errdefs.IsConflict(err) || !strings.Contains(err.Error(), "container web is using it") {
		t.Errorf("Remove of an image in use = %v, want a conflict naming web", err)
	}
	f.wantEvents()
	res, err := f.svc.Remove(ctx, "app:1", true)
	if err != nil || !slices.Equal(res.Untagged, []string{"app:1"}) || len(res.Deleted) != 0 {
		t.Fatalf("forced Remove of an image in use = %+v, %v; want untagged only", res, err)
	}
	f.wantEvents("untag " + id + " app:1")
	if _, err := f.svc.Resolve(ctx, id); err != nil {
		t.Errorf("the image in use is gone: %v", err)
	}
	if len(f.disks.prunes) != 0 {
		t.Errorf("disks pruned (%v) when only an image in use was untagged", f.disks.prunes)
	}
}

// A disk that cannot be removed fails the removal with one line saying so,
// and the image, which is gone, is still reported.
func TestRemoveDiskFailure(t *testing.T) {
	f := newFixture(t)
	id := f.load("app:1")
	f.events()
	f.disks.fail = true
	_, err := f.svc.Remove(context.Background(), "app:1", false)
	if err == nil || err.Error() != fmt.Sprintf("image %s removed, but not its disk: disk is busy", id) {
		t.Errorf("Remove with a busy disk = %v", err)
	}
	f.wantEvents("untag "+id+" app:1", "delete "+id+" "+id)
}

func TestInspectLayers(t *testing.T) {
	f := newFixture(t)
	id := f.load("app:1")
	got, err := f.svc.Inspect(context.Background(), "app:1")
	if err != nil {
		t.Fatal(err)
	}
	cf, err := f.loaded[0].ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, d := range cf.RootFS.DiffIDs {
		want = append(want, d.String())
	}
	if got.ID != id || len(want) == 0 || !slices.Equal(got.Layers, want) {
		t.Errorf("Inspect = %s layers %v, want %s layers %v", got.ID, got.Layers, id, want)
	}
	if _, err := f.svc.Inspect(context.Background(), "Bad:Ref:x"); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Inspect of a malformed reference = %v, want invalid argument", err)
	}
}

func TestSave(t *testing.T) {
	f := newFixture(t)
	f.load("app:1")
	if _, err := f.svc.Save(context.Background(), []string{"app:1", "nosuch"}); !errdefs.IsNotFound(err) {
		t.Errorf("Save with a missing image = %v, want not found", err)
	}
	a, err := f.svc.Save(context.Background(), []string{"app:1"})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := a.Write(&buf); err != nil {
		t.Fatal(err)
	}
	// Loaded into another store, the archive gives the same image.
	other := newFixture(t)
	loaded, err := other.svc.Load(context.Background(), &buf)
	if err != nil || len(loaded) != 1 || !slices.Equal(loaded[0].Tags, []string{"app:1"}) {
		t.Fatalf("load of the saved archive = %+v, %v", loaded, err)
	}
}

// Pull and push over a registry on the loopback: each is reported under
// the reference, pull in its familiar form.
func TestPullPush(t *testing.T) {
	ctx := context.Background()
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(reg.Close)
	host := strings.TrimPrefix(reg.URL, "http://")
	anon := RemoteOptions{Keychain: anonymous{}}

	f := newFixture(t)
	f.load(host+"/x/app:1", host+"/x/app:2")
	f.events()
	if _, _, err := f.svc.PushTargets(ctx, host+"/x/app", "3"); !errdefs.IsNotFound(err) {
		t.Errorf("PushTargets of a missing tag = %v, want not found", err)
	}
	if _, _, err := f.svc.PushTargets(ctx, "Bad Repo", ""); !errdefs.IsInvalidArgument(err) {
		t.Errorf("PushTargets of a malformed name = %v, want invalid argument", err)
	}
	repo, refs, err := f.svc.PushTargets(ctx, host+"/x/app", "")
	if err != nil || repo != host+"/x/app" || !slices.Equal(refs, []string{host + "/x/app:1", host + "/x/app:2"}) {
		t.Fatalf("PushTargets(no tag) = %q %q, %v", repo, refs, err)
	}
	if _, refs, err := f.svc.PushTargets(ctx, host+"/x/app", "2"); err != nil || !slices.Equal(refs, []string{host + "/x/app:2"}) {
		t.Errorf("PushTargets(tag 2) = %q, %v", refs, err)
	}
	var states []images.ProgressState
	push := anon
	push.Progress = func(p Progress) { states = append(states, p.State) }
	res, err := f.svc.Push(ctx, host+"/x/app:1", push)
	if err != nil || res.Tag != "1" {
		t.Fatalf("Push = %+v, %v", res, err)
	}
	if !slices.Contains(states, images.StatePushed) {
		t.Errorf("push progress %v has no %q", states, images.StatePushed)
	}
	f.wantEvents("push " + host + "/x/app:1 " + host + "/x/app:1")

	g := newFixture(t)
	pulled, err := g.svc.Pull(ctx, host+"/x/app:1", anon)
	if err != nil || pulled.Name != host+"/x/app:1" || pulled.Image.Digest != res.Digest {
		t.Fatalf("Pull = %+v, %v; want digest %s", pulled, err, res.Digest)
	}
	g.wantEvents("pull " + host + "/x/app:1 " + host + "/x/app:1")
	if _, err := g.svc.Pull(ctx, "Bad:Ref:x", anon); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Pull of a malformed reference = %v, want invalid argument", err)
	}
	if _, err := g.svc.Pull(ctx, host+"/x/nosuch:1", anon); err == nil {
		t.Errorf("Pull of a missing image succeeded")
	}
	g.wantEvents()
}

type anonymous struct{}

func (anonymous) Resolve(authn.Resource) (authn.Authenticator, error) { return authn.Anonymous, nil }

// A context over the cap, or one that is not a tar, is a clear 400 and
// leaves no scratch directory.
func TestBuildContextChecks(t *testing.T) {
	f := newFixture(t)
	old := MaxContext
	MaxContext = 4096
	t.Cleanup(func() { MaxContext = old })
	var big bytes.Buffer
	tw := tar.NewWriter(&big)
	tw.WriteHeader(&tar.Header{Name: "Dockerfile", Mode: 0o644, Size: 13})
	tw.Write([]byte("FROM scratch\n"))
	tw.WriteHeader(&tar.Header{Name: "big", Mode: 0o644, Size: 8192})
	tw.Write(make([]byte, 8192))
	tw.Close()
	_, err := f.svc.Build(context.Background(), BuildRequest{}, &big, io.Discard)
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "larger than 4096 bytes") {
		t.Errorf("a context over the cap: %v", err)
	}
	_, err = f.svc.Build(context.Background(), BuildRequest{}, strings.NewReader("not a tar at all, not at all............................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................................"), io.Discard)
	if !errdefs.IsInvalidArgument(err) {
		t.Errorf("a context that is no tar: %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(f.svc.cfg.Store.Root(), "tmp", "build-*")); len(left) > 0 {
		t.Errorf("scratch directories left: %v", left)
	}
}

// Prune deletes what nothing names or uses: untagged images, or with all
// every unused one; the build cache alone on request.
func TestPrune(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	kept := f.load("kept:1")
	used := f.load("used:1")
	f.users[used] = "c1"
	dangling := f.load("gone:1")
	if err := f.svc.Tag(ctx, "kept:1", "gone:1"); err != nil {
		t.Fatal(err)
	}
	res, err := f.svc.Prune(ctx, false, false)
	if err != nil || len(res.Deleted) != 1 || res.Deleted[0] != dangling {
		t.Fatalf("prune: %+v, %v; want %s deleted", res, err, dangling)
	}
	res, err = f.svc.Prune(ctx, true, false)
	if err != nil || len(res.Deleted) != 1 || res.Deleted[0] != kept {
		t.Fatalf("prune -a: %+v, %v; want %s deleted (and %s, in use, kept)", res, err, kept, used)
	}
	if _, err := f.svc.Resolve(ctx, "used:1"); err != nil {
		t.Errorf("an image in use was pruned: %v", err)
	}
}
