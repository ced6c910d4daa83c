package server

import (
	"context"
	"io"
	"net/http"
	"strconv"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/term"

	"github.com/vmctl/vmctl/engine/errs"
	"github.com/vmctl/vmctl/engine/services/containersvc"
)

// execRoutes registers docker exec's endpoints.
func (s *Server) execRoutes(m *http.ServeMux) {
	m.HandleFunc("POST /containers/{id}/exec", s.execCreate)
	m.HandleFunc("POST /exec/{id}/start", s.execStart)
	m.HandleFunc("GET /exec/{id}/json", s.execInspect)
	m.HandleFunc("POST /exec/{id}/resize", s.execResize)
}

func (s *Server) execCreate(w http.ResponseWriter, r *http.Request) {
	var req container.ExecCreateRequest
	if err := decodeBody(w, r, &req, false); err != nil {
		writeError(w, err)
		return
	}
	if _, err := parseDetachKeys(req.DetachKeys); err != nil {
		writeError(w, err)
		return
	}
	o := containersvc.ExecOptions{
		Cmd: req.Cmd, Env: req.Env, WorkingDir: req.WorkingDir, User: req.User, Tty: req.Tty,
		AttachStdin: req.AttachStdin, AttachStdout: req.AttachStdout, AttachStderr: req.AttachStderr,
		DetachKeys: req.DetachKeys, Privileged: req.Privileged,
	}
	if req.Tty && req.ConsoleSize != nil && req.ConsoleSize[0] > 0 && req.ConsoleSize[1] > 0 {
		o.ConsoleRows, o.ConsoleCols = clampU16(req.ConsoleSize[0]), clampU16(req.ConsoleSize[1])
	}
	id, err := s.containers.ExecCreate(r.PathValue("id"), o)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, container.ExecCreateResponse{ID: id})
}

// execStart runs the process. With Detach it answers 200 once the process
// runs; otherwise it hijacks the connection as attach does ("101 UPGRADED"
// when asked for an upgrade) and carries stdio until the process ends. A
// start failure after the hijack travels in the stream as one line, as
// dockerd sends it; the client then reads the exit code from inspect.
func (s *Server) execStart(w http.ResponseWriter, r *http.Request) {
	var req container.ExecStartRequest
	if err := decodeBody(w, r, &req, true); err != nil {
		writeError(w, err)
		return
	}
	id := r.PathValue("id")
	info, err := s.containers.ExecInspect(id)
	if err != nil {
		writeError(w, err)
		return
	}
	if req.ConsoleSize != nil && req.ConsoleSize[0] > 0 && req.ConsoleSize[1] > 0 && info.Options.Tty {
		// Sets the initial size: the process has not started yet.
		if err := s.containers.ExecResize(r.Context(), id, clampU16(req.ConsoleSize[0]), clampU16(req.ConsoleSize[1])); err != nil {
			writeError(w, err)
			return
		}
	}
	if req.Detach {
		if err := s.containers.ExecStart(r.Context(), id, containersvc.Stdio{}, true); err != nil {
			writeError(w, err)
			return
		}
		w.WriteHeader(http.StatusOK)
		return
	}

	conn, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		writeError(w, err)
		return
	}
	defer conn.Close()
	untrack := s.track(conn)
	defer untrack()

	// The stream is raw or multiplexed as the start request says, as
	// dockerd frames it, whatever the create asked for the process: an
	// exec made with a terminal and started with Tty false sends its
	// (terminal) output in stdout frames.
	tty := req.Tty
	status := "200 OK"
	upgrade := r.Header.Get("Upgrade") != ""
	if upgrade {
		status = "101 UPGRADED"
	}
	head := "HTTP/1.1 " + status + "\r\nContent-Type: " + streamType(r, tty) + "\r\n"
	if upgrade {
		head += "Connection: Upgrade\r\nUpgrade: tcp\r\n"
	}
	head += "Api-Version: " + APIVersion + "\r\n\r\n"
	if _, err := conn.Write([]byte(head)); err != nil {
		return
	}

	// dockerd kills an attached exec whose client went away. A hijacked
	// connection's close is only seen by a failing write, so that is what
	// cancels the start.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	outOut, outErr := outputWriters(cancelOnError{w: conn, cancel: cancel}, tty)
	stdio := containersvc.Stdio{}
	if info.Options.AttachStdout {
		stdio.Stdout = outOut
	}
	if info.Options.AttachStderr {
		stdio.Stderr = outErr
	}
	if info.Options.AttachStdin {
		// Bytes the server read ahead while parsing the request are stdin too.
		stdio.Stdin = io.MultiReader(bufReader(buf), conn)
		if info.Options.Tty {
			// The detach keys end the session and leave the process
			// running, as dockerd's do (checked at create).
			keys, _ := parseDetachKeys(info.Options.DetachKeys)
			stdio.Stdin = detachReader{term.NewEscapeProxy(stdio.Stdin, keys)}
		}
	}
	if err := s.containers.ExecStart(ctx, id, stdio, false); err != nil {
		outErr.Write([]byte(err.Error() + "\r\n"))
	}
	// Let the client read the last frames before the close.
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}

// cancelOnError cancels a context at the first failed write.
type cancelOnError struct {
	w      io.Writer
	cancel context.CancelFunc
}

func (c cancelOnError) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	if err != nil {
		c.cancel()
	}
	return n, err
}

func (s *Server) execInspect(w http.ResponseWriter, r *http.Request) {
	info, err := s.containers.ExecInspect(r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return
	}
	o := info.Options
	pc := &container.ExecProcessConfig{Tty: o.Tty, User: o.User, Privileged: &o.Privileged}
	if len(o.Cmd) > 0 {
		pc.Entrypoint, pc.Arguments = o.Cmd[0], append([]string{}, o.Cmd[1:]...)
	}
	writeJSON(w, http.StatusOK, container.ExecInspectResponse{
		ID: info.ID, Running: info.Running, ExitCode: info.ExitCode, ProcessConfig: pc,
		OpenStdin: o.AttachStdin, OpenStdout: o.AttachStdout, OpenStderr: o.AttachStderr,
		ContainerID: info.ContainerID,
	})
}

func (s *Server) execResize(w http.ResponseWriter, r *http.Request) {
	rows, err1 := strconv.ParseUint(r.URL.Query().Get("h"), 10, 16)
	cols, err2 := strconv.ParseUint(r.URL.Query().Get("w"), 10, 16)
	if err1 != nil || err2 != nil {
		writeError(w, errs.New(errdefs.ErrInvalidArgument, "invalid terminal size h=%q w=%q: want numbers from 0 to 65535", r.URL.Query().Get("h"), r.URL.Query().Get("w")))
		return
	}
	if err := s.containers.ExecResize(r.Context(), r.PathValue("id"), uint16(rows), uint16(cols)); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}
