package networksvc

import (
	"context"
	"errors"

	"github.com/containerd/errdefs"

	"github.com/vmctl/vmctl/engine/errs"
	"github.com/vmctl/vmctl/engine/networks"
)

// Connect gives a container an endpoint on a network: its address (o.IP,
// or the next free one), MAC and aliases, kept until Disconnect or
// Release. The container's VM gets the interface at its next start: a
// running VM cannot take another NIC, so a running container is refused.
func (s *Service) Connect(ctx context.Context, idOrName string, c ContainerRef, o EndpointOptions) (Endpoint, error) {
	running, err := s.running(c.ID)
	if err != nil {
		return Endpoint{}, err
	}
	if running {
		return Endpoint{}, errs.New(errdefs.ErrFailedPrecondition,
			"container %s is running: its VM cannot take another network interface while it runs; stop it, connect it, then start it", c.Name)
	}
	e, err := s.store.Connect(idOrName, c, o)
	if err != nil {
		return Endpoint{}, err
	}
	if n, err := s.store.Get(e.NetworkID); err == nil {
		s.publish("connect", n, c.ID)
	}
	return e, nil
}

// running reports whether a container has plumbed endpoints: it started
// and has not been unplumbed since.
func (s *Service) running(containerID string) (bool, error) {
	eps, err := s.store.ContainerEndpoints(containerID)
	if err != nil {
		return false, err
	}
	for _, e := range eps {
		if e.Plumbed() {
			return true, nil
		}
	}
	return false, nil
}

// Rename records a container's new name on its endpoints; where it runs,
// the networks' DNS answers for the new name at once, and no longer for
// the old one.
func (s *Service) Rename(ctx context.Context, containerID, name string) error {
	unlock, err := s.lockHost(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	eps, err := s.store.RenameContainer(containerID, name)
	if err != nil {
		return err
	}
	nets := map[string]Network{}
	for _, e := range eps {
		if !e.Plumbed() {
			continue
		}
		n, err := s.store.Get(e.NetworkID)
		if err != nil {
			return err
		}
		nets[n.ID] = n
	}
	return s.syncNames(ctx, nets)
}

// Disconnect removes a container's endpoint on a network and frees its
// address. A running container is refused unless force: then the
// endpoint's tap, rules and names go at once (and its published ports, if
// it carried them, until the next start), and the guest's interface is
// left without a link.
func (s *Service) Disconnect(ctx context.Context, idOrName, containerID string, force bool) error {
	unlock, err := s.lockHost(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	n, err := s.store.Get(idOrName)
	if err != nil {
		return err
	}
	eps, err := s.store.ContainerEndpoints(containerID)
	if err != nil {
		return err
	}
	var ep *Endpoint
	running := false
	for i := range eps {
		if eps[i].NetworkID == n.ID {
			ep = &eps[i]
		}
		running = running || eps[i].Plumbed()
	}
	if ep == nil {
		return errs.New(errdefs.ErrNotFound, "container %s is not connected to network %s", short(containerID), n.Name)
	}
	if running && !force {
		return errs.New(errdefs.ErrFailedPrecondition,
			"container %s is running: stop it first, or disconnect with force to cut its interface on %s now", ep.ContainerName, n.Name)
	}
	if running {
		// Only this endpoint's tap goes: the VM keeps its other NICs.
		// Published ports it carried go with it until the next start.
		if ep.Tap != "" {
			if err := s.host.DeleteLink(ep.Tap); err != nil {
				return err
			}
		}
		if len(ep.Ports) > 0 && s.proxies != nil {
			s.proxies.Unpublish(containerID)
		}
		if _, err := s.store.Disconnect(n.ID, containerID); err != nil {
			return err
		}
		s.publish("disconnect", n, containerID)
		return errors.Join(s.refreshRules(), s.syncNames(ctx, map[string]Network{n.ID: n}))
	}
	if _, err := s.store.Disconnect(n.ID, containerID); err != nil {
		return err
	}
	s.publish("disconnect", n, containerID)
	return nil
}

// Endpoints returns a container's endpoints, in the order of its guest's
// interfaces.
func (s *Service) Endpoints(ctx context.Context, containerID string) ([]Endpoint, error) {
	return s.store.ContainerEndpoints(containerID)
}

// SetPorts records the ports a container publishes (docker run -p, -P),
// host port 0 for one chosen at each start. They take effect at Plumb.
func (s *Service) SetPorts(ctx context.Context, containerID string, ports []PortBinding) error {
	if err := networks.ValidatePorts(ports); err != nil {
		return err
	}
	return s.store.UpdateSettings(containerID, func(st *networks.Settings) error {
		st.Ports = append([]PortBinding(nil), ports...)
		return nil
	})
}

// SetDNS records what a container's /etc/hosts and /etc/resolv.conf are
// made from besides its networks (hostname, --dns, --dns-search,
// --dns-option, --add-host). They take effect at Plumb.
func (s *Service) SetDNS(ctx context.Context, containerID string, c DNSConfig) error {
	for _, h := range c.ExtraHosts {
		if _, _, err := parseExtraHost(h); err != nil {
			return err
		}
	}
	return s.store.UpdateSettings(containerID, func(st *networks.Settings) error {
		st.DNS = c
		return nil
	})
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
