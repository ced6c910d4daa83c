package shim

import (
	"context"
	"io"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/fifo"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/vmctl/vmctl/engine/agent"
)

// ioChunk is the largest stdio transfer per agent call.
const ioChunk = 32 << 10

// outputDrain bounds the wait for output still in flight when a process
// has exited: a guest that never ends its streams cannot hold the exit.
const outputDrain = 5 * time.Second

// status is a process's state, as containerd names them.
type status int

const (
	statusCreated status = iota
	statusRunning
	statusStopped
)

// stdio names the FIFOs containerd gave a process; empty ones are not
// connected.
type stdio struct {
	stdin, stdout, stderr string
	terminal              bool
}

// process is a container's init (execID "") or one of its execs.
type process struct {
	containerID, execID string
	io                  stdio
	pid                 uint32
	// procSpec is an exec's process; nil for the init, whose is the
	// container's spec.
	procSpec *specs.Process

	mu       sync.Mutex
	status   status    // guarded by mu
	exitCode uint32    // guarded by mu; valid once exited is closed
	exitedAt time.Time // guarded by mu

	exited chan struct{} // closed once the exit is known and output delivered

	// stdinKeep is the shim's own write end of the stdin FIFO, closed by
	// CloseIO; guarded by mu.
	stdinKeep io.Closer
	// stdinDone is closed once the process's stdin is closed.
	stdinDone chan struct{}
	stdinOnce sync.Once
	// fifos are closed when the process is deleted.
	fifos []io.Closer
}

func newProcess(containerID, execID string, io stdio, pid uint32) *process {
	return &process{containerID: containerID, execID: execID, io: io, pid: pid,
		exited: make(chan struct{}), stdinDone: make(chan struct{})}
}

func (p *process) ref() agent.Process {
	return agent.Process{ContainerID: p.containerID, ExecID: p.execID}
}

func (p *process) state() (status, uint32, time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status, p.exitCode, p.exitedAt
}

func (p *process) setRunning() {
	p.mu.Lock()
	p.status = statusRunning
	p.mu.Unlock()
}

// setExited records the exit; the caller closes exited.
func (p *process) setExited(code uint32) {
	p.mu.Lock()
	p.status = statusStopped
	p.exitCode = code
	p.exitedAt = time.Now().UTC()
	p.mu.Unlock()
}

// openOutputs opens the stdout and stderr FIFOs for writing. The shim
// holds a read end of each as well (as runc's shim does), so the writes
// never fail for want of a reader: a client that detaches (ctr run -d)
// or attaches later (ctr task attach) finds the output where it was, and
// a process whose output nobody reads waits, as it would under runc.
func (p *process) openOutputs(ctx context.Context) (stdout, stderr io.WriteCloser, err error) {
	open := func(path string) (io.WriteCloser, error) {
		if path == "" {
			return nil, nil
		}
		w, err := fifo.OpenFifo(ctx, path, syscall.O_WRONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			return nil, err
		}
		r, err := fifo.OpenFifo(ctx, path, syscall.O_RDONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			w.Close()
			return nil, err
		}
		p.fifos = append(p.fifos, w, r)
		return w, nil
	}
	if stdout, err = open(p.io.stdout); err != nil {
		return nil, nil, err
	}
	if !p.io.terminal {
		if stderr, err = open(p.io.stderr); err != nil {
			return nil, nil, err
		}
	}
	return stdout, stderr, nil
}

// closeFifos closes what openOutputs and pumpStdin opened.
func (p *process) closeFifos() {
	for _, f := range p.fifos {
		f.Close()
	}
	p.fifos = nil
}

// pumpOutput copies a stream from the agent to w until it ends, then
// closes w. A reader that went away (the FIFO's other side closed) no
// longer gets the output, but the stream is still drained, so the guest
// never blocks on it.
func pumpOutput(ctx context.Context, ref agent.Process, read agent.ReadFunc, w io.WriteCloser) {
	agent.PumpOutput(ctx, read, ref, ioChunk, 0, func(b []byte) {
		if w == nil {
			return
		}
		if _, err := w.Write(b); err != nil {
			w.Close()
			w = nil
		}
	})
	if w != nil {
		w.Close()
	}
}

// stdinAgent is what pumpStdin asks of the agent.
type stdinAgent interface {
	WriteStdin(ctx context.Context, p agent.Process, data []byte) (int, error)
	CloseStdin(ctx context.Context, p agent.Process) error
}

// pumpStdin copies the stdin FIFO to the process until EOF, then closes
// the process's stdin. The shim holds a write end of the FIFO itself until
// CloseIO (as runc's shim does): a client's writer closing, or a client
// that attaches later, then does not end the process's input, and what a
// client wrote before its CloseIO is still delivered.
func (p *process) pumpStdin(ctx context.Context, a stdinAgent) error {
	if p.io.stdin == "" {
		return a.CloseStdin(ctx, p.ref())
	}
	keep, err := fifo.OpenFifo(ctx, p.io.stdin, syscall.O_WRONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	f, err := fifo.OpenFifo(ctx, p.io.stdin, syscall.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		keep.Close()
		return err
	}
	p.mu.Lock()
	p.stdinKeep = keep
	p.mu.Unlock()
	p.fifos = append(p.fifos, keep, f)
	go func() {
		defer p.closeStdin(ctx, a)
		buf := make([]byte, ioChunk)
		for {
			n, err := f.Read(buf)
			for data := buf[:n]; len(data) > 0; {
				m, werr := a.WriteStdin(ctx, p.ref(), data)
				if werr != nil {
					return
				}
				data = data[m:]
			}
			if err != nil {
				return // EOF after CloseIO, or the FIFO closed by Delete
			}
		}
	}()
	go func() {
		// The end of the process stops the copy.
		select {
		case <-p.exited:
		case <-ctx.Done():
		}
		f.Close()
	}()
	return nil
}

// closeIO lets the process's input end: once every client's writer is
// closed too and what they wrote is delivered, the copy sees EOF. Without
// a stdin FIFO it closes the process's stdin at once.
func (p *process) closeIO(ctx context.Context, a stdinAgent) {
	p.mu.Lock()
	keep := p.stdinKeep
	p.stdinKeep = nil
	p.mu.Unlock()
	if keep != nil {
		keep.Close()
		return
	}
	if p.io.stdin == "" {
		p.closeStdin(ctx, a)
	}
}

// closeStdin ends the process's stdin once.
func (p *process) closeStdin(ctx context.Context, a stdinAgent) {
	p.stdinOnce.Do(func() {
		close(p.stdinDone)
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_ = a.CloseStdin(cctx, p.ref())
	})
}
