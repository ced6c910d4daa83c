package server

import (
	"net/http"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/registry"

	"github.com/vmctl/vmctl/engine/errs"
)

// auth is POST /auth, docker login's check: the engine tries the
// credentials against the registry and answers "Login Succeeded"; the
// client, not the daemon, stores them.
func (s *Server) auth(w http.ResponseWriter, r *http.Request) {
	var req registry.AuthConfig
	if err := decodeBody(w, r, &req, false); err != nil {
		writeError(w, err)
		return
	}
	if req.IdentityToken != "" || req.RegistryToken != "" {
		writeError(w, errs.New(errdefs.ErrInvalidArgument, "login with a token is not supported: give a username and a password"))
		return
	}
	if _, err := s.images.CheckLogin(r.Context(), req.ServerAddress, req.Username, req.Password); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, registry.AuthResponse{Status: "Login Succeeded"})
}
