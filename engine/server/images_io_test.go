package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/vmctl/vmctl/engine/images"
)

// call sends one request to s and returns the status and body.
func call(t *testing.T, s *Server, method, path string, body io.Reader) (int, string, http.Header) {
	t.Helper()
	req := httptest.NewRequest(method, path, body)
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String(), rec.Header()
}

func randomImage(t *testing.T) v1.Image {
	t.Helper()
	img, err := random.Image(2048, 2)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func imageID(t *testing.T, img v1.Image) string {
	t.Helper()
	h, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	return h.String()
}

func archiveOf(t *testing.T, imgs ...images.NamedImage) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := images.WriteArchive(&buf, images.FormatDocker, imgs); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// listing is the store as GET /images/json shows it, for before/after checks.
func listing(t *testing.T, s *Server) string {
	t.Helper()
	code, body, _ := call(t, s, "GET", "/v1.41/images/json", nil)
	if code != 200 {
		t.Fatalf("images/json = %d %s", code, body)
	}
	return body
}

// streamLines decodes a JSON progress stream.
func streamLines(t *testing.T, body string) []streamMessage {
	t.Helper()
	var out []streamMessage
	dec := json.NewDecoder(strings.NewReader(body))
	for dec.More() {
		var m streamMessage
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("stream %q: %v", body, err)
		}
		out = append(out, m)
	}
	return out
}

func TestImageLoadSaveTag(t *testing.T) {
	s := newTestServer(t)
	img := randomImage(t)
	id := imageID(t, img)
	tarball := archiveOf(t, images.NamedImage{Tag: "app:1", Image: img})

	code, body, hdr := call(t, s, "POST", "/v1.41/images/load?quiet=1", bytes.NewReader(tarball))
	if code != 200 || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("load = %d %s", code, body)
	}
	if got := streamLines(t, body); len(got) != 1 || got[0].Stream != "Loaded image: app:1\n" {
		t.Errorf("load stream = %q, want one Loaded image: app:1 line", body)
	}

	code, body, _ = call(t, s, "POST", "/v1.41/images/app:1/tag?repo=127.0.0.1:5000/team/app&tag=2", nil)
	if code != http.StatusCreated || body != "" {
		t.Fatalf("tag = %d %q, want 201 and no body", code, body)
	}
	code, body, _ = call(t, s, "POST", "/v1.41/images/app:1/tag?repo=other", nil)
	if code != http.StatusCreated {
		t.Fatalf("tag without tag = %d %s", code, body)
	}
	if l := listing(t, s); !strings.Contains(l, `"127.0.0.1:5000/team/app:2"`) || !strings.Contains(l, `"other:latest"`) {
		t.Errorf("images after tag: %s", l)
	}

	// Loading reports the archive's names, not every name the image has.
	_, saved, _ := call(t, s, "GET", "/v1.41/images/app:1/get", nil)
	code, body, _ = call(t, s, "POST", "/v1.41/images/load", strings.NewReader(saved))
	if got := streamLines(t, body); code != 200 || len(got) != 1 || got[0].Stream != "Loaded image: app:1\n" {
		t.Errorf("reload = %d %q, want one Loaded image: app:1 line", code, body)
	}

	for _, path := range []string{"/v1.41/images/127.0.0.1:5000/team/app:2/get", "/v1.41/images/get?names=app:1&names=" + id} {
		code, body, hdr = call(t, s, "GET", path, nil)
		if code != 200 || hdr.Get("Content-Type") != "application/x-tar" {
			t.Fatalf("GET %s = %d %.200s", path, code, body)
		}
		// The saved archive loads into another daemon as the same image.
		other := newTestServer(t)
		code, got, _ := call(t, other, "POST", "/images/load", strings.NewReader(body))
		if code != 200 {
			t.Fatalf("load of %s = %d %s", path, code, got)
		}
		if l := listing(t, other); !strings.Contains(l, id) {
			t.Errorf("load of %s: image %s missing from %s", path, id, l)
		}
		if path == "/v1.41/images/127.0.0.1:5000/team/app:2/get" && !strings.Contains(got, "Loaded image: 127.0.0.1:5000/team/app:2") {
			t.Errorf("load of %s said %q", path, got)
		}
	}
}

func TestImageBadInput(t *testing.T) {
	s := newTestServer(t)
	img := randomImage(t)
	good := archiveOf(t, images.NamedImage{Tag: "app:1", Image: img})
	if code, body, _ := call(t, s, "POST", "/images/load", bytes.NewReader(good)); code != 200 {
		t.Fatalf("load = %d %s", code, body)
	}
	corrupt := bytes.Clone(good)
	corrupt[len(corrupt)/2] ^= 0xff
	old := maxLoadBytes
	t.Cleanup(func() { maxLoadBytes = old })
	for _, tc := range []struct {
		name, method, path string
		body               []byte
		code               int
		want               string
	}{
		// dockerd answers 200 and puts a load's failure in the stream.
		{"garbage tarball", "POST", "/images/load", []byte("this is not a tar archive, not at all................................"), 200, `"errorDetail":{"message":"loading image archive: not a valid image archive`},
		{"empty tarball", "POST", "/images/load", nil, 200, `"error":"loading image archive`},
		{"corrupt tarball", "POST", "/images/load", corrupt, 200, `"error":"loading image archive`},
		{"load too big", "POST", "/images/load", good, 413, "request body too large"},
		{"bad quiet", "POST", "/images/load?quiet=maybe", good, 400, "want a boolean"},
		{"save unknown", "GET", "/images/nope:1/get", nil, 404, "No such image: nope:1"},
		{"save bad reference", "GET", "/images/get?names=Not/A:Valid:ref", nil, 400, "invalid reference format"},
		{"save nothing", "GET", "/images/get", nil, 400, "no image to save"},
		{"save one unknown of two", "GET", "/images/get?names=app:1&names=nope", nil, 404, "No such image"},
		{"tag unknown", "POST", "/images/nope/tag?repo=x", nil, 404, "No such image"},
		{"tag bad repo", "POST", "/images/app:1/tag?repo=Bad/Name", nil, 400, "invalid reference format"},
		{"tag no repo", "POST", "/images/app:1/tag", nil, 400, "repo is required"},
		{"push unknown", "POST", "/images/127.0.0.1:9/nope/push?tag=1", nil, 404, "No such image"},
		{"push bad reference", "POST", "/images/Bad/Name/push?tag=1", nil, 400, "invalid reference format"},
		{"push repository without tags", "POST", "/images/127.0.0.1:9/nope/push", nil, 404, "No such image: 127.0.0.1:9/nope"},
		{"push bad auth", "POST", "/images/app/push?tag=1", nil, 400, "X-Registry-Auth"},
		{"unknown action", "POST", "/images/app:1/frobnicate", nil, 404, "page not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := listing(t, s)
			maxLoadBytes = old
			if tc.code == 413 {
				maxLoadBytes = int64(len(tc.body) / 2)
			}
			req := httptest.NewRequest(tc.method, tc.path, bytes.NewReader(tc.body))
			if tc.name == "push bad auth" {
				req.Header.Set("X-Registry-Auth", "!!not base64!!")
			}
			rec := httptest.NewRecorder()
			s.ServeHTTP(rec, req)
			if rec.Code != tc.code || !strings.Contains(rec.Body.String(), tc.want) {
				t.Errorf("%s %s = %d %q, want %d containing %q", tc.method, tc.path, rec.Code, rec.Body.String(), tc.code, tc.want)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("error reply Content-Type %q, want application/json", ct)
			}
			if after := listing(t, s); after != before {
				t.Errorf("store changed:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

func TestImagePush(t *testing.T) {
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(reg.Close)
	host := strings.TrimPrefix(reg.URL, "http://")
	s := newTestServer(t)
	img := randomImage(t)
	if code, body, _ := call(t, s, "POST", "/images/load", bytes.NewReader(archiveOf(t, images.NamedImage{Tag: host + "/x/app:1", Image: img}))); code != 200 {
		t.Fatalf("load = %d %s", code, body)
	}
	// The docker CLI sends an empty credentials object when it has none.
	push := func(path string) []streamMessage {
		req := httptest.NewRequest("POST", path, nil)
		req.Header.Set("X-Registry-Auth", "e30=")
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		if rec.Code != 200 {
			t.Fatalf("push = %d %s", rec.Code, rec.Body.String())
		}
		return streamLines(t, rec.Body.String())
	}
	count := func(msgs []streamMessage, status string) int {
		n := 0
		for _, m := range msgs {
			if m.Status == status {
				n++
			}
		}
		return n
	}
	msgs := push("/v1.41/images/" + host + "/x/app/push?tag=1")
	if msgs[0].Status != "The push refers to repository ["+host+"/x/app]" {
		t.Errorf("first message %+v", msgs[0])
	}
	if count(msgs, "Pushed") != 2 || count(msgs, "Preparing") != 2 {
		t.Errorf("want 2 layers prepared and pushed: %+v", msgs)
	}
	last := msgs[len(msgs)-1]
	var aux struct {
		Tag    string
		Digest string
		Size   int64
	}
	if last.Aux == nil || json.Unmarshal(*last.Aux, &aux) != nil {
		t.Fatalf("last message has no aux: %+v", last)
	}
	// Loaded from a docker save archive, the image has a manifest of the
	// store's making: compare with what the registry now serves.
	r, _ := name.ParseReference(host+"/x/app:1", name.Insecure)
	desc, err := remote.Head(r)
	if err != nil {
		t.Fatal(err)
	}
	if aux.Tag != "1" || aux.Digest != desc.Digest.String() || aux.Size != desc.Size {
		t.Errorf("aux = %+v, registry has %s size %d", aux, desc.Digest, desc.Size)
	}
	if status := msgs[len(msgs)-2].Status; status != fmt.Sprintf("1: digest: %s size: %d", desc.Digest, desc.Size) {
		t.Errorf("digest line = %q", status)
	}

	// Again, and without a tag (every tag of the repository): nothing to send.
	msgs = push("/v1.41/images/" + host + "/x/app/push")
	if count(msgs, "Layer already exists") != 2 || count(msgs, "Pushed") != 0 {
		t.Errorf("second push: %+v", msgs)
	}

	// A registry that went away: the error travels in the stream.
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadHost := dead.Addr().String()
	dead.Close()
	if code, body, _ := call(t, s, "POST", "/images/"+host+"/x/app:1/tag?repo="+deadHost+"/x/app&tag=1", nil); code != 201 {
		t.Fatalf("tag = %d %s", code, body)
	}
	msgs = push("/v1.41/images/" + deadHost + "/x/app/push?tag=1")
	last = msgs[len(msgs)-1]
	if last.Error == nil || last.ErrorMessage != last.Error.Message || !strings.Contains(last.ErrorMessage, "cannot reach registry "+deadHost) {
		t.Errorf("push to a closed port ended with %+v", last)
	}
}
