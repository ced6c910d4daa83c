package server

// Images in and out of the daemon: load (docker load), save (docker save),
// tag and push, with the JSON progress streams dockerd sends.

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/jsonstream"

	"github.com/vmctl/vmctl/engine/errs"
	"github.com/vmctl/vmctl/engine/services/imagesvc"
)

// maxLoadBytes caps a load's request body. An archive is streamed into the
// store's staging area, never held in memory, so the cap only stops a
// client from filling the disk with one request; real images are far
// smaller. A variable so tests can lower it.
var maxLoadBytes int64 = 64 << 30

// streamMessage is one line of a JSON progress stream. dockerd repeats an
// error's text in "error", which older clients read instead of errorDetail.
type streamMessage struct {
	jsonstream.Message
	ErrorMessage string `json:"error,omitempty"`
}

// jsonStream writes a progress stream. The 200 status goes out with the
// first message, so an error before it can still be an ordinary error
// reply; after it, errors travel in the stream. Safe for concurrent use.
type jsonStream struct {
	w       http.ResponseWriter
	mu      sync.Mutex
	started bool
	enc     *json.Encoder
}

func newJSONStream(w http.ResponseWriter) *jsonStream {
	return &jsonStream{w: w, enc: json.NewEncoder(w)}
}

func (s *jsonStream) send(m jsonstream.Message) {
	s.sendMessage(streamMessage{Message: m})
}

func (s *jsonStream) sendMessage(m streamMessage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started {
		s.w.Header().Set("Content-Type", "application/json")
		s.w.WriteHeader(http.StatusOK)
		s.started = true
	}
	// A client that went away makes the rest of the writes fail; the
	// operation still finishes (or is cancelled through the request's context).
	s.enc.Encode(m)
	http.NewResponseController(s.w).Flush()
}

// progress forwards a pull's or push's layer event as dockerd words it.
func (s *jsonStream) progress(p imagesvc.Progress) {
	m := jsonstream.Message{ID: p.ID(), Status: string(p.State), Progress: &jsonstream.Progress{}}
	if p.Total > 0 && p.Transferring() {
		m.Progress = &jsonstream.Progress{Current: p.Current, Total: p.Total}
	}
	s.send(m)
}

// fail reports err: as an error reply if nothing was sent yet, else as the
// stream's last message.
func (s *jsonStream) fail(err error) {
	s.mu.Lock()
	early := !s.started
	s.mu.Unlock()
	if early {
		writeError(s.w, err)
		return
	}
	s.streamError(err)
}

// streamError sends err as a message of the stream (starting it if need
// be): {"errorDetail":{"message":...},"error":...}, as dockerd sends it.
func (s *jsonStream) streamError(err error) {
	msg := strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")
	s.sendMessage(streamMessage{Message: jsonstream.Message{Error: &jsonstream.Error{Message: msg}}, ErrorMessage: msg})
}

// imageLoad serves POST /images/load: the body is a docker save or OCI
// layout tarball, streamed into the store. Nothing is stored unless every
// image in it verifies.
func (s *Server) imageLoad(w http.ResponseWriter, r *http.Request) {
	// Like dockerd, the result lines come as "stream" messages whether or
	// not quiet is set: quiet drops only progress, and a load has none to
	// show, since nothing is reported before the whole body is verified.
	if _, err := boolParam(r, "quiet"); err != nil {
		writeError(w, err)
		return
	}
	body := http.MaxBytesReader(w, r.Body, maxLoadBytes)
	loaded, err := s.images.Load(r.Context(), body)
	out := newJSONStream(w)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) || errdefs.IsCanceled(err) {
			writeError(w, err)
			return
		}
		// dockerd answers 200 and puts what went wrong in the stream,
		// where clients (docker load, the SDKs) look for it.
		out.streamError(err)
		return
	}
	for _, img := range loaded {
		if len(img.Tags) == 0 {
			out.send(jsonstream.Message{Stream: "Loaded image ID: " + img.ID + "\n"})
		}
		for _, t := range img.Tags {
			out.send(jsonstream.Message{Stream: "Loaded image: " + t + "\n"})
		}
	}
	if len(loaded) == 0 {
		// Every image was removed again by a concurrent rmi before the
		// reply; still a success, with nothing to name.
		writeJSON(w, http.StatusOK, struct{}{})
	}
}

// imageSaveMany serves GET /images/get?names=a&names=b.
func (s *Server) imageSaveMany(w http.ResponseWriter, r *http.Request) {
	s.imageSave(w, r, r.URL.Query()["names"])
}

// imageSave streams a docker save tarball of refs. Every reference is
// resolved before the 200, so an unknown one is an ordinary 404; blobs are
// copied from the store straight into the response.
func (s *Server) imageSave(w http.ResponseWriter, r *http.Request, refs []string) {
	archive, err := s.images.Save(r.Context(), refs)
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-tar")
	w.WriteHeader(http.StatusOK)
	if err := archive.Write(w); err != nil {
		// The status is sent; the only honest signal left is to cut the
		// connection, so the client sees a truncated download rather than
		// a short archive that looks whole. net/http's documented way.
		panic(http.ErrAbortHandler)
	}
}

// imagePost serves POST /images/{name}/tag and /images/{name}/push; the
// name may contain slashes.
func (s *Server) imagePost(w http.ResponseWriter, r *http.Request) {
	rest := r.PathValue("rest")
	i := strings.LastIndex(rest, "/")
	if i <= 0 {
		writeError(w, errs.New(errdefs.ErrNotFound, "page not found: %s %s", r.Method, r.URL.Path))
		return
	}
	ref, action := rest[:i], rest[i+1:]
	switch action {
	case "tag":
		s.imageTag(w, r, ref)
	case "push":
		s.imagePush(w, r, ref)
	default:
		writeError(w, errs.New(errdefs.ErrNotFound, "page not found: %s %s", r.Method, r.URL.Path))
	}
}

// imageTag is POST /images/{name}/tag?repo=&tag=; an empty tag is latest.
func (s *Server) imageTag(w http.ResponseWriter, r *http.Request, source string) {
	q := r.URL.Query()
	repo, tag := q.Get("repo"), q.Get("tag")
	if repo == "" {
		writeError(w, errs.New(errdefs.ErrInvalidArgument, "repo is required: the name to give the image"))
		return
	}
	target := repo
	if tag != "" {
		target += ":" + tag
	}
	if err := s.images.Tag(r.Context(), source, target); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusCreated)
}

// imagePush is POST /images/{name}/push?tag=, with the client's
// credentials in X-Registry-Auth. Without a tag every local tag of the
// repository is pushed, as dockerd does.
func (s *Server) imagePush(w http.ResponseWriter, r *http.Request, repo string) {
	keychain, err := clientKeychain(r.Header.Get("X-Registry-Auth"))
	if err != nil {
		writeError(w, err)
		return
	}
	// An image that is not here is a 404 before any progress.
	repository, refs, err := s.images.PushTargets(r.Context(), repo, r.URL.Query().Get("tag"))
	if err != nil {
		writeError(w, err)
		return
	}
	out := newJSONStream(w)
	out.send(jsonstream.Message{Status: "The push refers to repository [" + repository + "]"})
	for _, ref := range refs {
		res, err := s.images.Push(r.Context(), ref, imagesvc.RemoteOptions{Keychain: keychain, Progress: out.progress})
		if err != nil {
			out.fail(err)
			return
		}
		out.send(jsonstream.Message{Status: fmt.Sprintf("%s: digest: %s size: %d", res.Tag, res.Digest, res.Size)})
		aux, err := json.Marshal(struct {
			Tag    string
			Digest string
			Size   int64
		}{res.Tag, res.Digest, res.Size})
		if err != nil {
			out.fail(err)
			return
		}
		raw := json.RawMessage(aux)
		out.send(jsonstream.Message{Progress: &jsonstream.Progress{}, Aux: &raw})
	}
}

// imageImport serves POST /images/create?fromSrc=-: docker import of a
// root file system tar in the body, with repo and tag, message and changes
// (--change). A URL source is refused: the daemon fetches nothing for it.
func (s *Server) imageImport(w http.ResponseWriter, r *http.Request, src string) {
	q := r.URL.Query()
	if src != "-" {
		writeError(w, errs.New(errdefs.ErrInvalidArgument, "import from %q is not supported: send the archive in the request (docker import FILE or -)", src))
		return
	}
	tag := q.Get("repo")
	if t := q.Get("tag"); tag != "" && t != "" {
		tag += ":" + t
	}
	body := http.MaxBytesReader(w, r.Body, maxLoadBytes)
	img, err := s.images.Import(r.Context(), imagesvc.ImportRequest{Source: body, Tag: tag, Changes: q["changes"], Message: q.Get("message")})
	if err != nil {
		writeError(w, err)
		return
	}
	// dockerd's answer, which docker import prints: the image ID.
	newJSONStream(w).send(jsonstream.Message{Status: img.ID})
}
