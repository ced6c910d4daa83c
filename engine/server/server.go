// Package server is vmctld's REST front end: the subset of the Docker Engine
// API that the docker CLI needs to run containers, served over the engine's
// services. It converts between the wire types of github.com/moby/moby/api
// and the engine's domain types, hijacks connections for attach, frames
// stdout/stderr, and maps the engine's error classes onto HTTP status codes.
//
// It holds no container or image logic of its own, and it does not open
// listeners policy-free: ParseHost and Listen are the only places that know
// about addresses.
package server

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/common"

	"github.com/vmctl/vmctl/engine/errs"
	"github.com/vmctl/vmctl/engine/services"
)

// APIVersion is the Docker Engine API version advertised: the newest the
// Debian docker 20.10 client speaks. Newer clients negotiate down to it.
const APIVersion = "1.41"

// MinAPIVersion is the oldest version-prefixed path accepted.
const MinAPIVersion = "1.24"

// maxAPIMinor bounds the version-prefixed paths accepted: 1.56 is the
// newest API whose request and reply shapes this server is built from
// (github.com/moby/moby's api module); clients that pin a newer one are
// refused as dockerd refuses them, not served with guessed shapes.
const maxAPIMinor = 56

// maxBodyBytes caps JSON request bodies; a create request is a few KiB.
const maxBodyBytes = 1 << 20

// Server serves the API for one engine.
type Server struct {
	containers ContainerService
	images     ImageService
	volumes    VolumeService
	networks   NetworkService // nil: the engine has no networks
	system     SystemService
	events     EventSource
	// serverHeader is the Server header of every reply.
	serverHeader string
	mux          *http.ServeMux

	mu    sync.Mutex
	conns map[net.Conn]struct{} // hijacked connections, closed on Close

	streams eventStreams // open GET /events streams, ended on Close

	// LogRequest, if set, is told of every request when its handler
	// returns: vmctld --debug logs them, as dockerd -D does.
	LogRequest func(method, path string, status int, took time.Duration)
}

// New returns a Server over an engine's services (engine.Engine.Services).
func New(svc services.Services) *Server {
	var nets NetworkService
	if svc.Networks != nil {
		nets = svc.Networks
	}
	return newServer(svc.Containers, svc.Images, svc.Volumes, nets, svc.System, svc.Events)
}

// newServer is New over any implementations of the services: the engine's,
// or a test's.
func newServer(c ContainerService, i ImageService, v VolumeService, n NetworkService, sys SystemService, ev EventSource) *Server {
	s := &Server{
		containers: c, images: i, volumes: v, networks: n, system: sys, events: ev,
		serverHeader: "vmctld/" + sys.Version().Version + " (linux)",
		mux:          http.NewServeMux(), conns: map[net.Conn]struct{}{},
	}
	s.routes()
	return s
}

func (s *Server) routes() {
	m := s.mux
	m.HandleFunc("GET /_ping", s.ping)
	m.HandleFunc("HEAD /_ping", s.ping)
	m.HandleFunc("GET /version", s.version)
	m.HandleFunc("GET /info", s.info)
	m.HandleFunc("GET /distribution/{name...}", s.distributionInspect)
	m.HandleFunc("GET /system/df", s.systemDF)
	m.HandleFunc("GET /events", s.systemEvents)
	m.HandleFunc("POST /auth", s.auth)

	m.HandleFunc("GET /images/json", s.imageList)
	m.HandleFunc("POST /images/create", s.imageCreate)
	m.HandleFunc("POST /images/load", s.imageLoad)
	m.HandleFunc("POST /build", s.imageBuild)
	m.HandleFunc("POST /build/prune", s.buildPrune)
	m.HandleFunc("POST /images/prune", s.imagePrune)
	m.HandleFunc("POST /commit", s.imageCommit)
	m.HandleFunc("GET /images/get", s.imageSaveMany)
	// Image names contain slashes: /images/{name...} with the action last.
	m.HandleFunc("GET /images/{rest...}", s.imageGet)
	m.HandleFunc("POST /images/{rest...}", s.imagePost)
	m.HandleFunc("DELETE /images/{name...}", s.imageDelete)

	m.HandleFunc("POST /containers/create", s.containerCreate)
	m.HandleFunc("POST /containers/prune", s.containerPrune)
	m.HandleFunc("GET /containers/json", s.containerList)
	m.HandleFunc("GET /containers/{id}/json", s.containerInspect)
	m.HandleFunc("POST /containers/{id}/start", s.containerStart)
	m.HandleFunc("POST /containers/{id}/stop", s.containerStop)
	m.HandleFunc("POST /containers/{id}/restart", s.containerRestart)
	m.HandleFunc("POST /containers/{id}/kill", s.containerKill)
	m.HandleFunc("POST /containers/{id}/rename", s.containerRename)
	m.HandleFunc("POST /containers/{id}/update", s.containerUpdate)
	m.HandleFunc("POST /containers/{id}/pause", s.containerPause)
	m.HandleFunc("POST /containers/{id}/unpause", s.containerUnpause)
	m.HandleFunc("POST /containers/{id}/wait", s.containerWait)
	m.HandleFunc("POST /containers/{id}/resize", s.containerResize)
	m.HandleFunc("POST /containers/{id}/attach", s.containerAttach)
	m.HandleFunc("GET /containers/{id}/logs", s.containerLogs)
	m.HandleFunc("GET /containers/{id}/top", s.containerTop)
	m.HandleFunc("GET /containers/{id}/stats", s.containerStats)
	m.HandleFunc("GET /containers/{id}/changes", s.containerChanges)
	m.HandleFunc("HEAD /containers/{id}/archive", s.containerArchiveStat)
	m.HandleFunc("GET /containers/{id}/archive", s.containerArchiveGet)
	m.HandleFunc("PUT /containers/{id}/archive", s.containerArchivePut)
	m.HandleFunc("GET /containers/{id}/export", s.containerExport)
	m.HandleFunc("DELETE /containers/{id}", s.containerDelete)
	// docker rm --link /web/db names a link, with a slash in it.
	m.HandleFunc("DELETE /containers/{link...}", s.containerDeleteLink)
	s.execRoutes(m)
	s.volumeRoutes(m)
	s.networkRoutes(m)
	s.swarmRoutes(m)

	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, errs.New(errdefs.ErrNotFound, "page not found: %s %s", r.Method, r.URL.Path))
	})
}

var versionPrefix = regexp.MustCompile(`^/v([0-9]+)\.([0-9]+)(/.*)$`)

// apiVersionKey is the context key of the client's API version.
type apiVersionKey struct{}

// ServeHTTP strips the /vX.Y prefix, sets the headers every dockerd reply
// carries, and never lets a handler panic take the daemon down.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Api-Version", APIVersion)
	h.Set("Docker-Experimental", "false")
	h.Set("Ostype", "linux")
	h.Set("Server", s.serverHeader)
	version := APIVersion
	if m := versionPrefix.FindStringSubmatch(r.URL.Path); m != nil {
		major, err1 := strconv.Atoi(m[1])
		minor, err2 := strconv.Atoi(m[2])
		if err1 != nil || err2 != nil || major != 1 || minor < 24 {
			writeError(w, errs.New(errdefs.ErrInvalidArgument, "client version %s.%s is not supported: minimum supported API version is %s", m[1], m[2], MinAPIVersion))
			return
		}
		if minor > maxAPIMinor {
			writeError(w, errs.New(errdefs.ErrInvalidArgument, "client version %s.%s is too new. Maximum supported API version is 1.%d", m[1], m[2], maxAPIMinor))
			return
		}
		version = m[1] + "." + m[2]
		r2 := *r
		u := *r.URL
		u.Path = m[3]
		u.RawPath = ""
		r2.URL = &u
		r = &r2
	}
	r = r.WithContext(withAPIVersion(r.Context(), version))
	if s.LogRequest != nil {
		rec := &statusRecorder{ResponseWriter: w}
		w = rec
		start, method, path := time.Now(), r.Method, r.URL.RequestURI()
		defer func() { s.LogRequest(method, path, rec.code(), time.Since(start)) }()
	}
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			writeError(w, fmt.Errorf("internal error: %v", p))
		}
	}()
	s.mux.ServeHTTP(w, r)
}

// statusRecorder notes the status a handler wrote. Unwrap lets
// http.ResponseController reach the connection's writer (flushes of
// streams) through it.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// Hijack hands over the connection (attach, exec), whose head the handler
// writes itself: logged as 101.
func (r *statusRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, buf, err := http.NewResponseController(r.ResponseWriter).Hijack()
	if err == nil && r.status == 0 {
		r.status = http.StatusSwitchingProtocols
	}
	return c, buf, err
}

// code is the status written (200 for a handler that wrote nothing).
func (r *statusRecorder) code() int {
	if r.status == 0 {
		return http.StatusOK
	}
	return r.status
}

// Close closes every hijacked connection, so that attached clients see the
// daemon go away instead of hanging.
func (s *Server) Close() {
	s.streams.closeAll()
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.Close()
	}
}

func (s *Server) track(c net.Conn) func() {
	s.mu.Lock()
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}
}

// statusOf maps an engine error class onto the HTTP status dockerd uses
// for it. This is the only place that does.
func statusOf(err error) int {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge
	case errdefs.IsNotFound(err):
		return http.StatusNotFound
	case errdefs.IsInvalidArgument(err):
		return http.StatusBadRequest
	case errdefs.IsConflict(err), errdefs.IsAlreadyExists(err), errdefs.IsFailedPrecondition(err):
		return http.StatusConflict
	case errdefs.IsNotModified(err):
		return http.StatusNotModified
	case errdefs.IsUnauthorized(err):
		return http.StatusUnauthorized
	case errdefs.IsPermissionDenied(err):
		return http.StatusForbidden
	case errdefs.IsNotImplemented(err):
		return http.StatusNotImplemented
	case errdefs.IsUnavailable(err):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// writeError answers with Docker's error body, {"message": "..."}.
func writeError(w http.ResponseWriter, err error) {
	code := statusOf(err)
	if code == http.StatusNotModified {
		w.WriteHeader(code) // a 304 has no body
		return
	}
	writeJSON(w, code, common.ErrorResponse{Message: err.Error()})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// decodeBody reads a JSON body of at most maxBodyBytes into v. An empty
// body leaves v as it is when allowEmpty is set.
func decodeBody(w http.ResponseWriter, r *http.Request, v any, allowEmpty bool) error {
	body := http.MaxBytesReader(w, r.Body, maxBodyBytes)
	dec := json.NewDecoder(body)
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return errs.Class(errdefs.ErrInvalidArgument, fmt.Errorf("request body is larger than %d bytes: %w", maxBodyBytes, err))
		}
		if err.Error() == "EOF" {
			if allowEmpty {
				return nil
			}
			return errs.New(errdefs.ErrInvalidArgument, "request body is empty: want a JSON object")
		}
		return errs.New(errdefs.ErrInvalidArgument, "invalid JSON in request body: %v", err)
	}
	return nil
}

// boolParam reads a Docker boolean query parameter: "1", "true", "True"
// are true; absent, "", "0", "false" are false; anything else is an error.
func boolParam(r *http.Request, name string) (bool, error) {
	v := r.URL.Query().Get(name)
	switch v {
	case "", "0", "false", "False", "FALSE", "no":
		return false, nil
	case "1", "true", "True", "TRUE", "yes":
		return true, nil
	}
	return false, errs.New(errdefs.ErrInvalidArgument, "invalid value %q for query parameter %s: want a boolean", v, name)
}

// boolParams reads several boolean parameters, failing on the first bad one.
func boolParams(r *http.Request, names ...string) ([]bool, error) {
	out := make([]bool, len(names))
	for i, n := range names {
		v, err := boolParam(r, n)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}
