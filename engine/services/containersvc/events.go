package containersvc

import (
	"strconv"
	"syscall"

	"github.com/vmctl/vmctl/engine/containers"
	"github.com/vmctl/vmctl/engine/events"
)

// publish reports an event about c (Docker's container actions), with the
// attributes docker sets: the container's name, image and labels, plus
// extra. A Service without a publisher reports nothing.
func (s *Service) publish(action string, c *containers.Container, extra map[string]string) {
	if s.cfg.Events == nil {
		return
	}
	attrs := make(map[string]string, len(c.Config.Labels)+len(extra)+2)
	for k, v := range c.Config.Labels {
		attrs[k] = v
	}
	attrs["name"] = c.Name
	attrs["image"] = c.Config.Image
	for k, v := range extra {
		attrs[k] = v
	}
	s.cfg.Events.Publish(events.Event{Type: events.TypeContainer, Action: action, ID: c.ID, Attributes: attrs})
}

// publishKill reports a signal sent to the container's process.
func (s *Service) publishKill(c *containers.Container, sig syscall.Signal) {
	s.publish("kill", c, map[string]string{"signal": strconv.Itoa(int(sig))})
}

// publishExit reports how a run ended: oom first when the OOM killer
// ended it, then die with the exit code, as docker does.
func (s *Service) publishExit(c *containers.Container, st ExitStatus) {
	if st.OOMKilled {
		s.publish("oom", c, nil)
	}
	s.publish("die", c, map[string]string{"exitCode": strconv.Itoa(st.Code)})
}
