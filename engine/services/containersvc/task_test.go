package containersvc

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	agentapi "github.com/vmctl/vmctl/api/agent/v1"
	"github.com/vmctl/vmctl/engine/containers"
)

// TestPumpOutputHostileAgent checks what an output pump does with answers
// a guest should not give: a wrong offset ends the stream, and endless
// empty answers are paced instead of spun on.
func TestPumpOutputHostileAgent(t *testing.T) {
	newTask := func() *task {
		tk := &task{c: &containers.Container{ID: containers.NewID()}}
		tk.ctx, tk.cancel = context.WithCancel(context.Background())
		t.Cleanup(tk.cancel)
		return tk
	}

	t.Run("wrong offset", func(t *testing.T) {
		tk := newTask()
		var got []byte
		read := func(ctx context.Context, req *agentapi.ReadOutputRequest) (*agentapi.ReadOutputResponse, error) {
			return &agentapi.ReadOutputResponse{Data: []byte("x"), Offset: req.Offset + 7}, nil
		}
		tk.pumpOutput("", read, 0, func(b []byte) { got = append(got, b...) })
		if len(got) != 0 {
			t.Errorf("delivered %q from answers at the wrong offset", got)
		}
	})

	t.Run("empty answers", func(t *testing.T) {
		tk := newTask()
		var calls atomic.Int64
		read := func(ctx context.Context, req *agentapi.ReadOutputRequest) (*agentapi.ReadOutputResponse, error) {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			calls.Add(1)
			return &agentapi.ReadOutputResponse{Offset: req.Offset}, nil
		}
		done := make(chan struct{})
		go func() {
			tk.pumpOutput("", read, 0, func([]byte) {})
			close(done)
		}()
		const window = 200 * time.Millisecond
		time.Sleep(window)
		tk.cancel()
		<-done
		// Paced at emptyReadBackoff, the window holds about 20 reads; a
		// spinning pump makes hundreds of thousands.
		if n, limit := calls.Load(), int64(10*window/emptyReadBackoff); n > limit {
			t.Errorf("%d reads of empty answers in %s, want at most %d", n, window, limit)
		}
	})
}
