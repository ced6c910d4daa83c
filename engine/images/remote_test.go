package images

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func TestParseRemoteReference(t *testing.T) {
	def := name.DefaultRegistry
	for _, tc := range []struct {
		in, want, scheme string
	}{
		{"busybox", def + "/library/busybox:latest", "https"},
		{"busybox:1.36", def + "/library/busybox:1.36", "https"},
		{"library/busybox", def + "/library/busybox:latest", "https"},
		{"user/app", def + "/user/app:latest", "https"},
		{"registry.example:5000/a/b:c", "registry.example:5000/a/b:c", "https"},
		{"127.0.0.1:5000/x", "127.0.0.1:5000/x:latest", "http"},
		{"localhost:5000/x/y:1", "localhost:5000/x/y:1", "http"},
		{"localhost/x", "localhost/x:latest", "http"},
		{"[::1]:5000/x", "[::1]:5000/x:latest", "http"},
		{"busybox@sha256:" + strings.Repeat("a", 64), def + "/library/busybox@sha256:" + strings.Repeat("a", 64), "https"},
	} {
		r, err := ParseRemoteReference(tc.in)
		if err != nil {
			t.Errorf("ParseRemoteReference(%q): %v", tc.in, err)
			continue
		}
		if r.Name() != tc.want || r.Context().Scheme() != tc.scheme {
			t.Errorf("ParseRemoteReference(%q) = %s over %s, want %s over %s", tc.in, r.Name(), r.Context().Scheme(), tc.want, tc.scheme)
		}
	}
	for _, bad := range []string{"", "Busybox", "a:b:c", "busybox@sha256:12", "x y", ":nope"} {
		_, err := ParseRemoteReference(bad)
		if !errors.Is(err, ErrInvalidReference) || !errdefs.IsInvalidArgument(err) {
			t.Errorf("ParseRemoteReference(%q) = %v, want an invalid-reference error", bad, err)
		}
	}
}

// testRegistry is an in-memory registry on the loopback that records the
// requests it serves.
type testRegistry struct {
	host string
	mu   sync.Mutex
	log  []string
	// alter, if set, may replace a response body for a request path.
	alter func(path string, body []byte) []byte
}

func newTestRegistry(t *testing.T, wrap func(http.Handler) http.Handler) *testRegistry {
	t.Helper()
	tr := &testRegistry{}
	var h http.Handler = registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	inner := h
	h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tr.mu.Lock()
		tr.log = append(tr.log, r.Method+" "+r.URL.Path)
		alter := tr.alter
		tr.mu.Unlock()
		if alter == nil || r.Method != http.MethodGet {
			inner.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		inner.ServeHTTP(rec, r)
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		w.Write(alter(r.URL.Path, rec.Body.Bytes()))
	})
	if wrap != nil {
		h = wrap(h)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	tr.host = strings.TrimPrefix(srv.URL, "http://")
	return tr
}

// blobGets lists the blob digests fetched with GET since the last call.
func (tr *testRegistry) blobGets() []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var out []string
	for _, l := range tr.log {
		if strings.HasPrefix(l, "GET ") && strings.Contains(l, "/blobs/") {
			out = append(out, l[strings.LastIndex(l, "/")+1:])
		}
	}
	tr.log = nil
	return out
}

// collect returns a ProgressFunc feeding a board.
func collect(b *ProgressBoard) ProgressFunc { return func(p Progress) { b.Update(p) } }

func addTagged(t *testing.T, s *Store, img v1.Image, tag string) Image {
	t.Helper()
	got, err := s.Add(context.Background(), img, tag)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func layerDigests(t *testing.T, img v1.Image) []string {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range ls {
		d, _ := l.Digest()
		out = append(out, d.String())
	}
	return out
}

func TestPushPullSharesLayers(t *testing.T) {
	ctx := context.Background()
	reg := newTestRegistry(t, nil)
	base := testImage(t, "base", map[string]string{"bin/sh": "shell"}, map[string]string{"etc/x": "x"})
	child, err := mutate.AppendLayers(base, layerOf(t, map[string]string{"app": "new"}))
	if err != nil {
		t.Fatal(err)
	}
	src := openStore(t)
	baseRef, childRef := reg.host+"/test/base:1", reg.host+"/test/child:1"
	pushedBase := addTagged(t, src, base, baseRef)
	addTagged(t, src, child, childRef)

	var pushBoard ProgressBoard
	res, err := src.Push(ctx, baseRef, RemoteOptions{Progress: collect(&pushBoard)})
	if err != nil {
		t.Fatalf("Push: %v", err)
	}
	if res.Digest != pushedBase.Digest || res.Tag != "1" {
		t.Errorf("Push = %+v, want digest %s tag 1", res, pushedBase.Digest)
	}
	if n := pushBoard.Count(StatePushed); n != 2 {
		t.Errorf("push of base: %d layers pushed, want 2: %+v", n, pushBoard.Rows())
	}
	pushBoard = ProgressBoard{}
	if _, err := src.Push(ctx, childRef, RemoteOptions{Progress: collect(&pushBoard)}); err != nil {
		t.Fatalf("Push child: %v", err)
	}
	if e, p := pushBoard.Count(StateLayerExists), pushBoard.Count(StatePushed); e != 2 || p != 1 {
		t.Errorf("push of child: %d existing, %d pushed; want 2 and 1: %+v", e, p, pushBoard.Rows())
	}
	reg.blobGets()

	dst := openStore(t)
	var board ProgressBoard
	got, err := dst.Pull(ctx, baseRef, RemoteOptions{Progress: collect(&board)})
	if err != nil {
		t.Fatalf("Pull: %v", err)
	}
	if got.Digest != pushedBase.Digest || got.ID != pushedBase.ID {
		t.Errorf("pulled digest %s id %s, pushed %s %s", got.Digest, got.ID, pushedBase.Digest, pushedBase.ID)
	}
	if len(got.RepoTags) != 1 || got.RepoTags[0] != baseRef {
		t.Errorf("pulled tags %v, want [%s]", got.RepoTags, baseRef)
	}
	if n := board.Count(StateDone); n != 2 {
		t.Errorf("pull of base: %d layers complete, want 2: %+v", n, board.Rows())
	}
	if done, total := board.Totals(); done != total || total == 0 {
		t.Errorf("pull totals %d/%d", done, total)
	}

	reg.blobGets()
	board = ProgressBoard{}
	if _, err := dst.Pull(ctx, childRef, RemoteOptions{Progress: collect(&board)}); err != nil {
		t.Fatalf("Pull child: %v", err)
	}
	childLayers := layerDigests(t, child)
	cfg, _ := child.ConfigName()
	gets := reg.blobGets()
	want := []string{cfg.String(), childLayers[2]}
	if strings.Join(gets, ",") != strings.Join(want, ",") {
		t.Errorf("pull of child fetched blobs %v, want only config and new layer %v", gets, want)
	}
	if e, d := board.Count(StateAlreadyExists), board.Count(StateDone); e != 2 || d != 1 {
		t.Errorf("pull of child: %d already there, %d pulled; want 2 and 1: %+v", e, d, board.Rows())
	}
	if n := blobCount(t, dst); n != 3+2*2 {
		// 3 layers stored once, plus a manifest and a config per image.
		t.Errorf("store holds %d blobs, want 7", n)
	}
}

func layerOf(t *testing.T, files map[string]string) v1.Layer {
	t.Helper()
	img := testImage(t, "", files)
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	return ls[0]
}

func TestPullPicksPlatformFromIndex(t *testing.T) {
	reg := newTestRegistry(t, nil)
	amd := testImage(t, "amd64", map[string]string{"a": "1"})
	arm := testImage(t, "arm64", map[string]string{"b": "2"})
	cf, _ := arm.ConfigFile()
	cf = cf.DeepCopy()
	cf.Architecture = "arm64"
	arm, _ = mutate.ConfigFile(arm, cf)
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
	)
	ref := reg.host + "/multi:1"
	r, _ := ParseRemoteReference(ref)
	if err := remote.WriteIndex(r, idx); err != nil {
		t.Fatal(err)
	}
	s := openStore(t)
	for _, tc := range []struct{ arch, cmd string }{{"amd64", "amd64"}, {"arm64", "arm64"}} {
		got, err := s.Pull(context.Background(), ref, RemoteOptions{Platform: &v1.Platform{OS: "linux", Architecture: tc.arch}})
		if err != nil {
			t.Fatalf("Pull for %s: %v", tc.arch, err)
		}
		if len(got.Config.Cmd) != 1 || got.Config.Cmd[0] != tc.cmd {
			t.Errorf("Pull for %s gave image with Cmd %v", tc.arch, got.Config.Cmd)
		}
	}
	_, err := s.Pull(context.Background(), ref, RemoteOptions{Platform: &v1.Platform{OS: "linux", Architecture: "s390x"}})
	if !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), "linux/s390x") {
		t.Errorf("Pull for s390x = %v, want not found naming the platform", err)
	}
}

func TestPullFailureLeavesStoreUnchanged(t *testing.T) {
	img := testImage(t, "x", map[string]string{"a": strings.Repeat("payload ", 1<<16)}, map[string]string{"b": "2"})
	layers := layerDigests(t, img)
	for _, tc := range []struct {
		name   string
		alter  func(path string, body []byte) []byte
		cancel bool
		want   string
	}{
		{name: "corrupt layer", alter: func(path string, body []byte) []byte {
			if strings.HasSuffix(path, layers[0]) {
				body = bytes.Clone(body)
				body[len(body)/2] ^= 0xff
			}
			return body
		}, want: "checksum"},
		{name: "truncated layer", alter: func(path string, body []byte) []byte {
			if strings.HasSuffix(path, layers[1]) {
				return body[:len(body)-1]
			}
			return body
		}},
		{name: "cancelled", cancel: true, want: "context canceled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := newTestRegistry(t, nil)
			ref := reg.host + "/x:1"
			r, _ := ParseRemoteReference(ref)
			if err := remote.Write(r, img); err != nil {
				t.Fatal(err)
			}
			reg.alter = tc.alter
			s := openStore(t)
			addTagged(t, s, testImage(t, "other", map[string]string{"o": "o"}), "other:1")
			before := snapshot(t, s)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			opts := RemoteOptions{Jobs: 1}
			if tc.cancel {
				opts.Progress = func(p Progress) {
					if p.State == StateDownloading {
						cancel()
					}
				}
			}
			_, err := s.Pull(ctx, ref, opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Pull = %v, want an error containing %q", err, tc.want)
			}
			if after := snapshot(t, s); !mapsEqual(before, after) {
				t.Errorf("failed pull changed the store:\nbefore %v\nafter  %v", before, after)
			}
		})
	}
}

func TestRemoteErrors(t *testing.T) {
	reg := newTestRegistry(t, nil)
	// A port nothing listens on: bind one, then close it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	s := openStore(t)
	for _, tc := range []struct {
		ref   string
		class func(error) bool
		want  string
	}{
		{reg.host + "/nothing:here", errdefs.IsNotFound, "not found in registry " + reg.host},
		{closed + "/x:1", errdefs.IsUnavailable, "cannot reach registry " + closed},
		{"UPPER/case", errdefs.IsInvalidArgument, "invalid reference format"},
	} {
		_, err := s.Pull(context.Background(), tc.ref, RemoteOptions{})
		if err == nil || !tc.class(err) || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("Pull(%q) = %v, want one line containing %q", tc.ref, err, tc.want)
		}
	}
	if _, err := s.Push(context.Background(), reg.host+"/absent:1", RemoteOptions{}); !errdefs.IsNotFound(err) {
		t.Errorf("Push of an image not in the store = %v, want not found", err)
	}
}
