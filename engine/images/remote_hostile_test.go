package images

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// hostileRegistry serves one image whose manifest declares the given sizes
// for its config (0: its true size, and the config is served) and its
// layer, and answers every other blob GET with an endless stream (no
// Content-Length), counting the bytes it managed to send.
func hostileRegistry(t *testing.T, configSize, layerSize int64) (host string, sent *atomic.Int64) {
	t.Helper()
	sent = new(atomic.Int64)
	fake := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("1", 64)}
	cfg := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["` + fake.String() + `"]}}`)
	if configSize == 0 {
		configSize = int64(len(cfg)) // an honest config
	}
	cfgDigest := sha256Of(cfg)
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		Config:        v1.Descriptor{MediaType: types.OCIConfigJSON, Size: configSize, Digest: cfgDigest},
		Layers:        []v1.Descriptor{{MediaType: types.OCILayer, Size: layerSize, Digest: fake}},
	}
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v2/":
		case strings.Contains(r.URL.Path, "/manifests/"):
			w.Header().Set("Content-Type", string(types.OCIManifestSchema1))
			w.Header().Set("Content-Length", fmt.Sprint(len(raw)))
			if r.Method == http.MethodGet {
				w.Write(raw)
			}
		case strings.HasSuffix(r.URL.Path, "/blobs/"+cfgDigest.String()) && configSize == int64(len(cfg)):
			w.Write(cfg)
		case strings.Contains(r.URL.Path, "/blobs/") && r.Method == http.MethodGet:
			chunk := []byte(strings.Repeat("a", 64<<10))
			w.WriteHeader(http.StatusOK)
			// Bounded, so that a client that reads on does not hang the test.
			for range 1024 {
				if ctx.Err() != nil || r.Context().Err() != nil {
					return
				}
				n, err := w.Write(chunk)
				sent.Add(int64(n))
				if err != nil {
					return
				}
			}
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(func() { stop(); srv.Close() })
	return strings.TrimPrefix(srv.URL, "http://"), sent
}

// A registry cannot make a pull read without bound: a config (read into
// memory) must declare a size within the limit for configs, and no blob may
// declare an unknown (negative) size, with which the registry client reads
// to the end of whatever the registry sends.
func TestPullRefusesUnboundedBlobs(t *testing.T) {
	for _, tc := range []struct {
		name               string
		configSize, layers int64
	}{
		{"config of unknown size", -1, 10},
		{"config larger than any config", 1 << 40, 10},
		{"layer of unknown size", 0, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			host, sent := hostileRegistry(t, tc.configSize, tc.layers)
			s := openStore(t)
			before := snapshot(t, s)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, err := s.Pull(ctx, host+"/x:1", RemoteOptions{Jobs: 1})
			if err == nil {
				t.Fatal("Pull succeeded")
			}
			if n := sent.Load(); n > 1<<20 {
				t.Errorf("Pull read %d bytes of a blob it should have refused unread (error: %v)", n, err)
			}
			if !strings.Contains(err.Error(), "size") {
				t.Errorf("Pull error %q does not say the size is what is wrong", err)
			}
			if after := snapshot(t, s); !mapsEqual(before, after) {
				t.Errorf("the failed pull changed the store")
			}
		})
	}
}
