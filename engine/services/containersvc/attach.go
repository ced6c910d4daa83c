package containersvc

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"
)

// AttachOptions are the streams a client connects to a container. Nil
// members are not attached. Stdout and Stderr may be written from two
// goroutines at once; a writer that multiplexes both onto one connection
// must lock.
type AttachOptions struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
}

// Attachment is one client's connection to a container's run.
type Attachment struct {
	stdout, stderr io.Writer // guarded by the owning task's outMu; nil after a write error
	stdin          io.Reader
	// stdinOnce closes the container's stdin at this client's stdin EOF
	// (docker's StdinOnce); otherwise stdin waits for the next client.
	stdinOnce bool

	done     chan struct{}
	doneOnce sync.Once
}

// Done is closed when the run the attachment is bound to has ended and all
// of its output has been written, or when the container is removed.
func (a *Attachment) Done() <-chan struct{} { return a.done }

func (a *Attachment) finish() { a.doneOnce.Do(func() { close(a.done) }) }

// Attach connects streams to the container's current run or, if it is not
// running, to its next start: attaching before start, as docker run does,
// loses no output. Stdin is used only if the container was created with
// OpenStdin; one client's stdin feeds the container at a time.
func (s *Service) Attach(ref string, o AttachOptions) (*Attachment, error) {
	c, err := s.cfg.Store.Get(ref)
	if err != nil {
		return nil, err
	}
	a := &Attachment{
		stdout: o.Stdout, stderr: o.Stderr, done: make(chan struct{}),
		stdinOnce: c.Config.StdinOnce,
	}
	if c.Config.OpenStdin {
		a.stdin = o.Stdin
	}
	if c.Config.Tty {
		a.stderr = nil // a terminal carries everything on stdout
	}
	s.publish("attach", c, nil)
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.tasks[c.ID]; t != nil {
		t.addAttachment(a)
		return a, nil
	}
	s.pending[c.ID] = append(s.pending[c.ID], a)
	return a, nil
}

// Detach stops delivering output to the attachment and releases it.
func (s *Service) Detach(a *Attachment) {
	s.mu.Lock()
	for id, list := range s.pending {
		for i, p := range list {
			if p == a {
				s.pending[id] = append(list[:i:i], list[i+1:]...)
			}
		}
	}
	tasks := make([]*task, 0, len(s.tasks))
	for _, t := range s.tasks {
		tasks = append(tasks, t)
	}
	s.mu.Unlock()
	for _, t := range tasks {
		t.removeAttachment(a)
	}
	a.finish()
}

// addAttachment binds a to this run. Precondition: s.mu is held (so a run
// cannot end between the lookup and the binding unseen).
func (t *task) addAttachment(a *Attachment) {
	t.outMu.Lock()
	if t.outputEnded {
		t.outMu.Unlock()
		a.finish()
		return
	}
	t.attached = append(t.attached, a)
	t.outMu.Unlock()
	if a.stdin != nil {
		select {
		case t.stdinCh <- a:
		default: // enough clients queued for stdin already
		}
	}
}

func (t *task) removeAttachment(a *Attachment) {
	t.outMu.Lock()
	defer t.outMu.Unlock()
	for i, p := range t.attached {
		if p == a {
			t.attached = append(t.attached[:i:i], t.attached[i+1:]...)
			return
		}
	}
}

// output stores a chunk in the log and hands it to every attached client.
// A client whose writer fails stops receiving that stream; the others and
// the log go on. A client that does not read stalls this run's output, as
// with Docker.
func (t *task) output(stream Stream, data []byte) {
	t.outMu.Lock()
	defer t.outMu.Unlock()
	if t.log != nil {
		if err := t.log.write(stream, time.Now(), data); err != nil {
			t.log.close()
			t.log = nil // a full disk must not stop the container's output
		}
	}
	for _, a := range t.attached {
		w := &a.stdout
		if stream == StreamStderr {
			w = &a.stderr
		}
		if *w == nil {
			continue
		}
		if _, err := (*w).Write(data); err != nil {
			*w = nil
		}
	}
}

// endOutput marks the run's output complete and releases its clients.
func (t *task) endOutput() {
	t.outMu.Lock()
	t.outputEnded = true
	list := t.attached
	t.attached = nil
	if t.log != nil {
		t.log.close()
		t.log = nil
	}
	t.outMu.Unlock()
	for _, a := range list {
		a.finish()
	}
	t.outputDoneOnce.Do(func() { close(t.outputDone) })
}

// ErrDetached is what an attached client's stdin returns once its user
// typed the detach keys (docker's ctrl-p ctrl-q): the client goes, the
// container's stdin stays open.
var ErrDetached = errors.New("detached from the container")

// pumpStdin feeds the container's stdin from attached clients, one at a
// time, until a client with stdinOnce reaches EOF or the run ends.
func (t *task) pumpStdin() {
	closeStdin := func() { t.agent.CloseStdin(t.ctx, t.process("")) }
	buf := make([]byte, ioChunk)
	for {
		var a *Attachment
		select {
		case a = <-t.stdinCh:
		case <-t.ctx.Done():
			return
		}
		detached := false
		for {
			n, err := a.stdin.Read(buf)
			if n > 0 {
				if _, werr := t.agent.WriteStdin(t.ctx, t.process(""), buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				detached = errors.Is(err, ErrDetached)
				break
			}
		}
		if detached {
			a.finish() // its client goes; the next one may take stdin
			continue
		}
		if a.stdinOnce {
			closeStdin()
			return
		}
	}
}

// closeStdinNow is for containers without OpenStdin: their process reads
// EOF at once, as under Docker.
func (t *task) closeStdinNow(ctx context.Context) {
	t.agent.CloseStdin(ctx, t.process(""))
}
