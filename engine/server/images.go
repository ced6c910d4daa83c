package server

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	dockerspec "github.com/moby/docker-image-spec/specs-go/v1"
	"github.com/moby/moby/api/types/image"
	"github.com/moby/moby/api/types/jsonstream"
	"github.com/moby/moby/api/types/registry"

	"github.com/vmctl/vmctl/engine/errs"
	"github.com/vmctl/vmctl/engine/services/imagesvc"
)

func (s *Server) imageList(w http.ResponseWriter, r *http.Request) {
	all, err := boolParam(r, "all")
	if err != nil {
		writeError(w, err)
		return
	}
	list, err := s.images.List(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	out := make([]image.Summary, 0, len(list))
	for _, img := range list {
		// A build's intermediate images (its steps' results, kept for
		// its cache) show with all only, as docker images -a shows them.
		if !all && len(img.RepoTags) == 0 && img.BuildCacheKey != "" {
			continue
		}
		out = append(out, imageSummary(img))
	}
	writeJSON(w, http.StatusOK, out)
}

func imageSummary(img imagesvc.Image) image.Summary {
	sum := image.Summary{
		ID: img.ID, RepoTags: img.RepoTags, RepoDigests: nonNil(img.RepoDigests), Created: img.Created.Unix(),
		Size: img.Size, Labels: img.Config.Labels, Containers: -1, SharedSize: -1,
	}
	if sum.RepoTags == nil {
		sum.RepoTags = []string{}
	}
	if sum.Labels == nil {
		sum.Labels = map[string]string{}
	}
	return sum
}

// imageHistory serves GET /images/{name}/history.
func (s *Server) imageHistory(w http.ResponseWriter, r *http.Request, ref string) {
	hist, err := s.images.History(r.Context(), ref)
	if err != nil {
		writeError(w, err)
		return
	}
	out := make([]image.HistoryResponseItem, 0, len(hist))
	for _, h := range hist {
		out = append(out, image.HistoryResponseItem{ID: h.ID, Created: h.Created.Unix(), CreatedBy: h.CreatedBy,
			Comment: h.Comment, Size: h.Size, Tags: nonNil(h.Tags)})
	}
	writeJSON(w, http.StatusOK, out)
}

// imageGet serves GET /images/{name}/json (inspect), /images/{name}/get
// (save) and /images/{name}/history; the name may contain slashes.
func (s *Server) imageGet(w http.ResponseWriter, r *http.Request) {
	rest := r.PathValue("rest")
	if ref, ok := strings.CutSuffix(rest, "/get"); ok && ref != "" {
		s.imageSave(w, r, []string{ref})
		return
	}
	if ref, ok := strings.CutSuffix(rest, "/history"); ok && ref != "" {
		s.imageHistory(w, r, ref)
		return
	}
	ref, ok := strings.CutSuffix(rest, "/json")
	if !ok || ref == "" {
		writeError(w, errs.New(errdefs.ErrNotFound, "page not found: %s %s", r.Method, r.URL.Path))
		return
	}
	img, err := s.images.Inspect(r.Context(), ref)
	if err != nil {
		writeError(w, err)
		return
	}
	resp := image.InspectResponse{
		ID: img.ID, RepoTags: nonNil(img.RepoTags), RepoDigests: nonNil(img.RepoDigests),
		Created: img.Created.UTC().Format("2006-01-02T15:04:05.999999999Z07:00"),
		Size:    img.Size, Os: img.OS, Architecture: img.Architecture,
		RootFS: image.RootFS{Type: "layers", Layers: img.Layers},
	}
	// The image config's JSON field names are Docker's (Env, Cmd,
	// Entrypoint, ...), so the stored config converts by a JSON round trip.
	cfg, err := json.Marshal(img.Config)
	if err == nil {
		resp.Config = &dockerspec.DockerOCIImageConfig{}
		err = json.Unmarshal(cfg, resp.Config)
	}
	if err != nil {
		writeError(w, fmt.Errorf("image %s: config: %w", ref, err))
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func (s *Server) imageDelete(w http.ResponseWriter, r *http.Request) {
	ref := r.PathValue("name")
	flags, err := boolParams(r, "force", "noprune")
	if err != nil {
		writeError(w, err)
		return
	}
	res, err := s.images.Remove(r.Context(), ref, flags[0])
	if err != nil {
		writeError(w, err)
		return
	}
	out := []image.DeleteResponse{}
	for _, t := range res.Untagged {
		out = append(out, image.DeleteResponse{Untagged: t})
	}
	for _, d := range res.Deleted {
		out = append(out, image.DeleteResponse{Deleted: d})
	}
	writeJSON(w, http.StatusOK, out)
}

// imageCreate pulls an image (docker pull, and docker run of a missing
// image). Progress is a stream of JSON messages; an error before the first
// message is an ordinary error reply, after it an errorDetail message.
func (s *Server) imageCreate(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if src := q.Get("fromSrc"); src != "" {
		s.imageImport(w, r, src)
		return
	}
	ref := q.Get("fromImage")
	if ref == "" {
		writeError(w, errs.New(errdefs.ErrInvalidArgument, "fromImage is required"))
		return
	}
	if tag := q.Get("tag"); tag != "" {
		if strings.HasPrefix(tag, "sha256:") {
			ref += "@" + tag
		} else {
			ref += ":" + tag
		}
	}
	keychain, err := clientKeychain(r.Header.Get("X-Registry-Auth"))
	if err != nil {
		writeError(w, err)
		return
	}

	// A malformed reference fails the pull before any progress: an
	// ordinary error reply.
	out := newJSONStream(w)
	pulled, err := s.images.Pull(r.Context(), ref, imagesvc.RemoteOptions{Keychain: keychain, Progress: out.progress})
	if err != nil {
		out.fail(err)
		return
	}
	out.send(jsonstream.Message{Status: "Digest: " + pulled.Image.Digest})
	out.send(jsonstream.Message{Status: "Status: Downloaded newer image for " + pulled.Name})
}

// clientKeychain turns the X-Registry-Auth header (base64url JSON) into
// credentials. No header, or an empty object, is anonymous access: the
// daemon does not lend its own credentials to clients.
func clientKeychain(header string) (authn.Keychain, error) {
	if header == "" {
		return anonymous{}, nil
	}
	b, err := base64.URLEncoding.DecodeString(header)
	if err != nil {
		b, err = base64.RawURLEncoding.DecodeString(header)
	}
	if err != nil {
		return nil, errs.New(errdefs.ErrInvalidArgument, "invalid X-Registry-Auth header: not base64url")
	}
	var cfg registry.AuthConfig
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, errs.New(errdefs.ErrInvalidArgument, "invalid X-Registry-Auth header: %v", err)
	}
	if cfg.Username == "" && cfg.Password == "" && cfg.IdentityToken == "" && cfg.RegistryToken == "" {
		return anonymous{}, nil
	}
	return static{authn.FromConfig(authn.AuthConfig{
		Username: cfg.Username, Password: cfg.Password,
		IdentityToken: cfg.IdentityToken, RegistryToken: cfg.RegistryToken,
	})}, nil
}

type anonymous struct{}

func (anonymous) Resolve(authn.Resource) (authn.Authenticator, error) { return authn.Anonymous, nil }

type static struct{ a authn.Authenticator }

func (k static) Resolve(authn.Resource) (authn.Authenticator, error) { return k.a, nil }

// distributionInspect is GET /distribution/{name}/json: what the registry
// says of a reference, without pulling it (docker-py's get_registry_data,
// docker manifest inspect's first step).
func (s *Server) distributionInspect(w http.ResponseWriter, r *http.Request) {
	ref, ok := strings.CutSuffix(r.PathValue("name"), "/json")
	if !ok || ref == "" {
		writeError(w, errs.New(errdefs.ErrNotFound, "page not found: %s %s", r.Method, r.URL.Path))
		return
	}
	keychain, err := clientKeychain(r.Header.Get("X-Registry-Auth"))
	if err != nil {
		writeError(w, err)
		return
	}
	d, err := s.images.Distribution(r.Context(), ref, imagesvc.RemoteOptions{Keychain: keychain})
	if err != nil {
		writeError(w, err)
		return
	}
	platforms := d.Platforms
	if platforms == nil {
		platforms = []v1.Platform{}
	}
	writeJSON(w, http.StatusOK, struct {
		Descriptor v1.Descriptor
		Platforms  []v1.Platform
	}{d.Descriptor, platforms})
}
