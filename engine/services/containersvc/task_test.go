package containersvc

import (
	"context"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmctl/vmctl/engine/agent"
	"github.com/vmctl/vmctl/engine/containers"
)

// TestPumpOutputHostileAgent checks what an output pump does with answers
// a guest should not give: a refused answer (the agent client checks
// offsets and sizes) ends the stream, and endless empty answers are paced
// instead of spun on.
func TestPumpOutputHostileAgent(t *testing.T) {
	newTask := func() *task {
		tk := &task{c: &containers.Container{ID: containers.NewID()}}
		tk.ctx, tk.cancel = context.WithCancel(context.Background())
		t.Cleanup(tk.cancel)
		return tk
	}

	t.Run("refused answer", func(t *testing.T) {
		tk := newTask()
		var got []byte
		var offsets []uint64
		read := func(ctx context.Context, p agent.Process, max int, off uint64) (agent.Output, error) {
			offsets = append(offsets, off)
			if len(offsets) > 2 {
				return agent.Output{}, agent.ErrBadAnswer
			}
			return agent.Output{Data: []byte("ab")}, nil
		}
		tk.pumpOutput(tk.ctx, "", read, 5, func(b []byte) { got = append(got, b...) })
		if string(got) != "abab" || !reflect.DeepEqual(offsets, []uint64{5, 7, 9}) {
			t.Errorf("delivered %q reading at offsets %v, want \"abab\" from 5, 7, then a refused read at 9", got, offsets)
		}
	})

	t.Run("empty answers", func(t *testing.T) {
		tk := newTask()
		var calls atomic.Int64
		read := func(ctx context.Context, p agent.Process, max int, off uint64) (agent.Output, error) {
			if err := ctx.Err(); err != nil {
				return agent.Output{}, err
			}
			calls.Add(1)
			return agent.Output{}, nil
		}
		done := make(chan struct{})
		go func() {
			tk.pumpOutput(tk.ctx, "", read, 0, func([]byte) {})
			close(done)
		}()
		const window = 200 * time.Millisecond
		time.Sleep(window)
		tk.cancel()
		<-done
		// Paced at agent.EmptyReadBackoff, the window holds about 20 reads; a
		// spinning pump makes hundreds of thousands.
		if n, limit := calls.Load(), int64(10*window/agent.EmptyReadBackoff); n > limit {
			t.Errorf("%d reads of empty answers in %s, want at most %d", n, window, limit)
		}
	})
}
