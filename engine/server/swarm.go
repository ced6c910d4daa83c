package server

import (
	"net/http"

	"github.com/containerd/errdefs"

	"github.com/vmctl/vmctl/engine/errs"
)

// Swarm mode and plugins: vmctld has neither, and answers their endpoints
// as a dockerd that is in no swarm and has no plugins does, so clients
// that probe or clean up with them (docker swarm leave -f, docker info,
// SDK test fixtures) get the answers they handle.

// notManager is dockerd's answer to a swarm call on a node in no swarm.
const notManager = `This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" to connect this node to swarm and try again.`

func (s *Server) swarmRoutes(m *http.ServeMux) {
	unavailable := func(msg string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			writeError(w, errs.New(errdefs.ErrUnavailable, "%s", msg))
		}
	}
	m.HandleFunc("POST /swarm/leave", unavailable("This node is not part of a swarm"))
	m.HandleFunc("POST /swarm/init", unavailable("swarm mode is not supported by vmctld"))
	m.HandleFunc("POST /swarm/join", unavailable("swarm mode is not supported by vmctld"))
	for _, p := range []string{"/swarm", "/swarm/", "/nodes", "/nodes/", "/services", "/services/", "/tasks", "/tasks/",
		"/secrets", "/secrets/", "/configs", "/configs/"} {
		m.HandleFunc(p, unavailable(notManager))
	}
	m.HandleFunc("GET /plugins", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, []struct{}{})
	})
	m.HandleFunc("GET /plugins/{name}/json", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, errs.New(errdefs.ErrNotFound, "plugin %q not found", r.PathValue("name")))
	})
	m.HandleFunc("/plugins/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, errs.New(errdefs.ErrNotImplemented, "plugins are not supported by vmctld"))
	})
}
