package containersvc

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/vmctl/vmctl/engine/events"
)

// The service reports exec events with Docker's actions and
// attributes.
func TestServiceEvents(t *testing.T) {
	s, _, tk := execFixture(t)
	bus := events.NewBus(0)
	s.cfg.Events = bus
	tk.c.Config.Image = "busybox"
	tk.c.Config.Labels = map[string]string{"tier": "front"}
	_, sub := bus.Subscribe(time.Time{}, nil)
	defer sub.Close()

	id, err := s.ExecCreate("box", ExecOptions{Cmd: []string{"exit", "5"}})
	if err != nil {
		t.Fatal(err)
	}
	s.ExecStart(context.Background(), id, Stdio{}, false)
	want := []string{
		"exec_create: exit 5 execID=" + id,
		"exec_start: exit 5 execID=" + id,
		"exec_die execID=" + id + " exitCode=5",
	}
	for i, w := range want {
		select {
		case e := <-sub.C():
			got := e.Action
			for _, k := range []string{"execID", "exitCode", "signal"} {
				if v, ok := e.Attributes[k]; ok {
					got += fmt.Sprintf(" %s=%s", k, v)
				}
			}
			if got != w {
				t.Errorf("event %d = %q, want %q", i, got, w)
			}
			if e.Type != events.TypeContainer || e.ID != tk.c.ID || e.Attributes["name"] != "box" ||
				e.Attributes["image"] != "busybox" || e.Attributes["tier"] != "front" {
				t.Errorf("event %d = %+v, want the container's ID, name, image and labels", i, e)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("event %d (%s) never came", i, w)
		}
	}
}
