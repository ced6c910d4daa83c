package server

// POST /build: dockerd's classic builder API (Builder-Version 1).

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/image"
	"github.com/moby/moby/api/types/jsonstream"

	"github.com/vmctl/vmctl/engine/errs"
	"github.com/vmctl/vmctl/engine/services/containersvc"
	"github.com/vmctl/vmctl/engine/services/imagesvc"
)

// imageBuild serves POST /build: the body is the build context as a tar
// (plain or compressed), the query docker build's options. The reply is
// the classic builder's stream: "Step N/M : ..." lines, the image ID as
// an aux message, "Successfully built/tagged"; with q only the ID. An
// error before the first line is an error reply; after, it ends the
// stream as errorDetail, as dockerd sends it.
func (s *Server) imageBuild(w http.ResponseWriter, r *http.Request) {
	req, quiet, err := buildRequest(r)
	if err != nil {
		writeError(w, err)
		return
	}
	out := newJSONStream(w)
	lines := &lineWriter{}
	if quiet {
		lines.send = func(string) {}
	} else {
		lines.send = func(l string) { out.send(jsonstream.Message{Stream: l}) }
	}
	body := http.MaxBytesReader(w, r.Body, imagesvc.MaxContext)
	res, err := s.images.Build(r.Context(), req, body, lines)
	lines.flush()
	if err != nil {
		if quiet {
			for _, l := range lines.all {
				out.send(jsonstream.Message{Stream: l})
			}
		}
		out.fail(err)
		return
	}
	aux, _ := json.Marshal(struct{ ID string }{res.ID})
	raw := json.RawMessage(aux)
	out.send(jsonstream.Message{Aux: &raw})
	if quiet {
		out.send(jsonstream.Message{Stream: res.ID + "\n"})
	}
}

// buildRequest reads docker build's query parameters.
func buildRequest(r *http.Request) (imagesvc.BuildRequest, bool, error) {
	q := r.URL.Query()
	var req imagesvc.BuildRequest
	if q.Get("remote") != "" {
		return req, false, errs.New(errdefs.ErrInvalidArgument, "remote build contexts are not supported: send the context as the request body")
	}
	if v := q.Get("version"); v != "" && v != "1" {
		return req, false, errs.New(errdefs.ErrInvalidArgument, "builder version %q is not supported: this engine has the classic builder (version 1)", v)
	}
	flags, err := boolParams(r, "nocache", "q", "rm", "forcerm", "pull")
	if err != nil {
		return req, false, err
	}
	req.NoCache, req.Pull = flags[0], flags[4]
	req.Dockerfile = q.Get("dockerfile")
	req.Target = q.Get("target")
	for _, t := range q["t"] {
		if err := imagesvc.CheckTag(t); err != nil {
			return req, false, errs.New(errdefs.ErrInvalidArgument, "invalid tag %q: %v", t, err)
		}
		req.Tags = append(req.Tags, t)
	}
	if v := q.Get("buildargs"); v != "" {
		if err := json.Unmarshal([]byte(v), &req.BuildArgs); err != nil {
			return req, false, errs.New(errdefs.ErrInvalidArgument, "invalid buildargs %q: %v", v, err)
		}
		for k, val := range req.BuildArgs {
			if val == nil {
				// The client had no value for it either: dockerd then
				// leaves the ARG's default, as an unset argument.
				delete(req.BuildArgs, k)
			}
		}
	}
	if v := q.Get("labels"); v != "" {
		if err := json.Unmarshal([]byte(v), &req.Labels); err != nil {
			return req, false, errs.New(errdefs.ErrInvalidArgument, "invalid labels %q: %v", v, err)
		}
	}
	switch m := q.Get("networkmode"); m {
	case "", "default", "bridge", "none":
		req.Network = m
	default:
		return req, false, errs.New(errdefs.ErrInvalidArgument, "network mode %q is not supported for builds: use default or none", m)
	}
	switch p := q.Get("platform"); p {
	case "", "linux", "linux/amd64":
	default:
		return req, false, errs.New(errdefs.ErrInvalidArgument, "platform %q is not supported: this engine builds linux/amd64", p)
	}
	return req, flags[1], nil
}

// lineWriter hands what a build writes to send a line at a time, and
// keeps every line (a quiet build's output goes out only with its error).
type lineWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	all  []string
	send func(string)
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	for {
		i := bytes.IndexByte(l.buf.Bytes(), '\n')
		if i < 0 {
			return len(p), nil
		}
		line := string(l.buf.Next(i + 1))
		l.all = append(l.all, line)
		l.send(line)
	}
}

func (l *lineWriter) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if rest := l.buf.String(); rest != "" {
		l.buf.Reset()
		if !strings.HasSuffix(rest, "\n") {
			rest += "\n"
		}
		l.all = append(l.all, rest)
		l.send(rest)
	}
}

// imageCommit serves POST /commit: an image of a running container, its
// changes as a new layer, with the changes query's instructions applied.
// The body (a container config) may be empty; its command, environment,
// working directory, user and labels, when set, override the container's.
func (s *Server) imageCommit(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if _, err := boolParam(r, "pause"); err != nil {
		writeError(w, err)
		return
	}
	req := imagesvc.CommitRequest{Container: q.Get("container"), Comment: q.Get("comment"), Author: q.Get("author"), Changes: q["changes"]}
	if req.Container == "" {
		writeError(w, errs.New(errdefs.ErrInvalidArgument, "container is required"))
		return
	}
	if repo := q.Get("repo"); repo != "" {
		req.Tag = repo
		if tag := q.Get("tag"); tag != "" {
			req.Tag += ":" + tag
		}
	} else if q.Get("tag") != "" {
		writeError(w, errs.New(errdefs.ErrInvalidArgument, "a tag needs a repository"))
		return
	}
	var body struct {
		Cmd, Entrypoint, Env []string
		WorkingDir, User     string
		Labels               map[string]string
	}
	if err := decodeBody(w, r, &body, true); err != nil {
		writeError(w, err)
		return
	}
	// The body's settings come first, as changes of their own, so that
	// the query's changes win.
	var pre []string
	if body.Cmd != nil {
		b, _ := json.Marshal(body.Cmd)
		pre = append(pre, "CMD "+string(b))
	}
	if body.Entrypoint != nil {
		b, _ := json.Marshal(body.Entrypoint)
		pre = append(pre, "ENTRYPOINT "+string(b))
	}
	for _, e := range body.Env {
		if k, v, ok := strings.Cut(e, "="); ok {
			b, _ := json.Marshal(v)
			pre = append(pre, "ENV "+k+"="+string(b))
		}
	}
	if body.WorkingDir != "" {
		pre = append(pre, "WORKDIR "+body.WorkingDir)
	}
	if body.User != "" {
		pre = append(pre, "USER "+body.User)
	}
	for k, v := range body.Labels {
		kb, _ := json.Marshal(k)
		vb, _ := json.Marshal(v)
		pre = append(pre, "LABEL "+string(kb)+"="+string(vb))
	}
	req.Changes = append(pre, req.Changes...)
	img, err := s.images.Commit(r.Context(), req)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, struct{ Id string }{img.ID})
}

// containerChanges serves GET /containers/{id}/changes (docker diff).
func (s *Server) containerChanges(w http.ResponseWriter, r *http.Request) {
	changes, err := s.images.Diff(r.Context(), r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return
	}
	out := make([]container.FilesystemChange, 0, len(changes))
	for _, c := range changes {
		out = append(out, container.FilesystemChange{Path: c.Path, Kind: container.ChangeType(c.Kind)})
	}
	writeJSON(w, http.StatusOK, out)
}

// containerExport serves GET /containers/{id}/export: the container's file
// system as a tar. A failure once the tar has begun cuts the connection,
// so a client never takes a short tar for a whole one.
func (s *Server) containerExport(w http.ResponseWriter, r *http.Request) {
	lw := &lazyTar{w: w}
	if err := s.images.Export(r.Context(), r.PathValue("id"), lw); err != nil {
		if !lw.started {
			writeError(w, err)
			return
		}
		panic(http.ErrAbortHandler)
	}
}

// lazyTar sends the 200 with the first bytes of a tar.
type lazyTar struct {
	w       http.ResponseWriter
	started bool
}

func (l *lazyTar) Write(p []byte) (int, error) {
	if !l.started {
		l.w.Header().Set("Content-Type", "application/x-tar")
		l.w.WriteHeader(http.StatusOK)
		l.started = true
	}
	return l.w.Write(p)
}

// pathStatHeader is docker cp's X-Docker-Container-Path-Stat: the path's
// description as base64 JSON.
func pathStatHeader(w http.ResponseWriter, st containersvc.PathStat) {
	b, _ := json.Marshal(container.PathStat{Name: st.Name, Size: st.Size, Mode: st.Mode, Mtime: st.Mtime, LinkTarget: st.LinkTarget})
	w.Header().Set("X-Docker-Container-Path-Stat", base64.StdEncoding.EncodeToString(b))
}

func archivePath(r *http.Request) (string, error) {
	p := r.URL.Query().Get("path")
	if p == "" {
		return "", errs.New(errdefs.ErrInvalidArgument, "path is required")
	}
	return p, nil
}

// statArchivePath reads the path parameter and sets the stat header of
// what it names; false once it answered with an error.
func (s *Server) statArchivePath(w http.ResponseWriter, r *http.Request) (string, bool) {
	p, err := archivePath(r)
	if err != nil {
		writeError(w, err)
		return "", false
	}
	st, err := s.containers.StatPath(r.Context(), r.PathValue("id"), p)
	if err != nil {
		writeError(w, err)
		return "", false
	}
	pathStatHeader(w, st)
	return p, true
}

// containerArchiveStat serves HEAD /containers/{id}/archive.
func (s *Server) containerArchiveStat(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.statArchivePath(w, r); ok {
		w.WriteHeader(http.StatusOK)
	}
}

// containerArchiveGet serves GET /containers/{id}/archive: a tar of the
// path, its description in the stat header.
func (s *Server) containerArchiveGet(w http.ResponseWriter, r *http.Request) {
	p, err := archivePath(r)
	if err != nil {
		writeError(w, err)
		return
	}
	lw := &lazyTar{w: w}
	err = s.containers.ArchivePath(r.Context(), r.PathValue("id"), p, func(st containersvc.PathStat) io.Writer {
		pathStatHeader(w, st)
		return lw
	})
	if err != nil {
		if !lw.started {
			w.Header().Del("X-Docker-Container-Path-Stat")
			writeError(w, err)
			return
		}
		panic(http.ErrAbortHandler)
	}
	if !lw.started {
		lw.Write(nil)
	}
}

// containerArchivePut serves PUT /containers/{id}/archive: the body, a
// tar, unpacked into the directory path names.
func (s *Server) containerArchivePut(w http.ResponseWriter, r *http.Request) {
	p, err := archivePath(r)
	if err != nil {
		writeError(w, err)
		return
	}
	flags, err := boolParams(r, "copyUIDGID", "noOverwriteDirNonDir")
	if err != nil {
		writeError(w, err)
		return
	}
	body := http.MaxBytesReader(w, r.Body, containersvc.MaxCopy)
	if err := s.containers.CopyIn(r.Context(), r.PathValue("id"), p, body, flags[0], flags[1]); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// imagePrune serves POST /images/prune: docker image prune deletes the
// untagged images no container uses (a build's intermediate images among
// them), with the filter dangling=false (-a) every unused one.
func (s *Server) imagePrune(w http.ResponseWriter, r *http.Request) {
	terms, err := filterTerms(r)
	if err != nil {
		writeError(w, err)
		return
	}
	all := false
	for k, v := range terms {
		switch {
		case k == "dangling" && len(v) == 1 && (v[0] == "false" || v[0] == "0"):
			all = true
		case k == "dangling" && len(v) == 1 && (v[0] == "true" || v[0] == "1"):
		default:
			writeError(w, errs.New(errdefs.ErrInvalidArgument, "invalid filter '%s'", k))
			return
		}
	}
	res, err := s.images.Prune(r.Context(), all, false)
	if err != nil {
		writeError(w, err)
		return
	}
	out := image.PruneReport{ImagesDeleted: []image.DeleteResponse{}, SpaceReclaimed: res.Freed}
	for _, d := range res.Deleted {
		out.ImagesDeleted = append(out.ImagesDeleted, image.DeleteResponse{Deleted: d})
	}
	writeJSON(w, http.StatusOK, out)
}

// buildPrune serves POST /build/prune: docker builder prune deletes the
// build cache, the classic builder's intermediate images no container
// uses.
func (s *Server) buildPrune(w http.ResponseWriter, r *http.Request) {
	if _, err := boolParam(r, "all"); err != nil {
		writeError(w, err)
		return
	}
	res, err := s.images.Prune(r.Context(), true, true)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		CachesDeleted  []string
		SpaceReclaimed uint64
	}{append([]string{}, res.Deleted...), res.Freed})
}
