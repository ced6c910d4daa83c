package qemu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/digitalocean/go-qemu/qemu"
	"github.com/digitalocean/go-qemu/qmp"
)

// connectMonitor connects QMP, performs the capabilities handshake and
// subscribes to events. At Start QEMU is still paused (-S), so no guest
// event can precede the subscription. When ctx ends first, QEMU is killed
// if killOnCancel is set (Start: the half-started VM goes), else left
// running (Reattach: a busy monitor must not cost the guest its life).
func (v *vm) connectMonitor(ctx context.Context, killOnCancel bool) error {
	ch := make(chan monitorConn, 1)
	go func() {
		// The socket is already listening (QEMU inherited it), so the dial
		// succeeds at once; the handshake waits for QEMU's main loop.
		mon, err := qmp.NewSocketMonitor("unix", v.qmpPath, 2*time.Second)
		if err != nil {
			ch <- monitorConn{err: err}
			return
		}
		if err := mon.Connect(); err != nil {
			ch <- monitorConn{err: fmt.Errorf("qmp handshake: %w", err)}
			return
		}
		dom, err := qemu.NewDomain(mon, v.id)
		if err != nil {
			mon.Disconnect()
			ch <- monitorConn{err: err}
			return
		}
		events, done, err := dom.Events()
		if err != nil {
			dom.Close()
			ch <- monitorConn{err: err}
			return
		}
		ch <- monitorConn{dom: dom, events: events, done: done}
	}()

	var r monitorConn
	select {
	case r = <-ch:
	case <-ctx.Done():
		// Killing QEMU resets the connection, which ends the goroutine.
		if killOnCancel {
			v.kill()
		}
		go discardMonitor(ch)
		return ctx.Err()
	case <-v.exited:
		go discardMonitor(ch)
		return errors.New("qemu exited")
	}
	if r.err != nil {
		return r.err
	}
	eventsDone := make(chan struct{})
	v.mu.Lock()
	if v.monitorClosed { // QEMU died and the reaper finished meanwhile
		v.mu.Unlock()
		go discardMonitor(chanOf(r))
		return errors.New("qemu exited")
	}
	v.dom = r.dom
	v.eventsDone = eventsDone
	v.mu.Unlock()
	go v.readEvents(r.events, r.done, eventsDone)
	return nil
}

// monitorConn is the outcome of connecting QMP.
type monitorConn struct {
	dom    *qemu.Domain
	events chan qmp.Event
	done   chan struct{}
	err    error
}

// discardMonitor waits for a connection attempt that Start gave up on and
// closes what it produced.
func discardMonitor(ch <-chan monitorConn) {
	r := <-ch
	if r.dom == nil {
		return
	}
	go func() {
		for range r.events { // keep go-qemu's reader unblocked until closed
		}
	}()
	close(r.done)
	r.dom.Close()
}

// readEvents records the events that explain an exit. It must keep reading
// until the stream closes: go-qemu reads replies and events on one
// goroutine, so an unread event stalls every later command reply.
func (v *vm) readEvents(events <-chan qmp.Event, done, finished chan struct{}) {
	defer close(finished)
	defer close(done) // releases go-qemu's per-listener goroutine
	for ev := range events {
		switch ev.Event {
		case "SHUTDOWN":
			reason, _ := ev.Data["reason"].(string)
			v.mu.Lock()
			if v.facts.shutdownReason == "" {
				v.facts.shutdownReason = reason
			}
			v.mu.Unlock()
		case "GUEST_PANICKED":
			v.mu.Lock()
			v.facts.guestPanicked = true
			v.mu.Unlock()
			go v.endStoppedGuest()
		case "BLOCK_IO_ERROR":
			// The disks report errors to the guest (werror/rerror=report):
			// the guest sees EIO, the operator sees this line.
			dev, _ := ev.Data["device"].(string)
			op, _ := ev.Data["operation"].(string)
			reason, _ := ev.Data["reason"].(string)
			v.ioErrors.report(v.id, dev, op, reason)
		case "VSERPORT_CHANGE":
			if id, _ := ev.Data["id"].(string); id == agentPortID {
				open, _ := ev.Data["open"].(bool)
				v.agentPort.changed(open)
			}
		case "STOP":
			// The guest was paused by QEMU itself (nobody here sends
			// "stop"): an internal error leaves QEMU running forever with a
			// dead guest.
			go v.checkStopped()
		}
	}
}

// checkStopped kills QEMU if the guest stopped in a state it cannot leave.
func (v *vm) checkStopped() {
	v.mu.Lock()
	dom := v.dom
	v.mu.Unlock()
	if dom == nil {
		return
	}
	st, err := dom.Status()
	if err != nil {
		return // QEMU is exiting; the reaper has the facts
	}
	switch st {
	case qemu.StatusInternalError:
		v.mu.Lock()
		v.facts.internalError = true
		v.mu.Unlock()
		v.kill()
	case qemu.StatusGuestPanicked:
		v.mu.Lock()
		v.facts.guestPanicked = true
		v.mu.Unlock()
		v.endStoppedGuest()
	}
}

// endStoppedGuest ends a VM whose guest cannot continue. The exit is
// already classified as a crash, whatever the kill looks like.
func (v *vm) endStoppedGuest() {
	select {
	case <-v.exited:
	case <-time.After(time.Second): // QEMU's own panic action may end it
		v.kill()
	}
}

// errNoMonitor is returned by run before QMP is connected.
var errNoMonitor = errors.New("qmp not connected")

// run executes one argument-less QMP command (runCommand).
func (v *vm) run(ctx context.Context, command string) error {
	return v.runCommand(ctx, qmp.Command{Execute: command})
}

// runCommand executes one QMP command, giving up when ctx ends or QEMU
// exits.
func (v *vm) runCommand(ctx context.Context, c qmp.Command) error {
	v.mu.Lock()
	dom := v.dom
	v.mu.Unlock()
	if dom == nil {
		return errNoMonitor
	}
	errc := make(chan error, 1)
	go func() {
		_, err := dom.Run(c)
		errc <- err
	}()
	select {
	case err := <-errc:
		if err != nil {
			return fmt.Errorf("qmp %s: %w", c.Execute, err)
		}
		return nil
	case <-v.exited:
		return fmt.Errorf("qmp %s: qemu exited", c.Execute)
	case <-ctx.Done():
		return fmt.Errorf("qmp %s: %w", c.Execute, ctx.Err())
	}
}

// closeMonitor disconnects QMP; later calls do nothing, and a connection
// that completes afterwards is discarded by connectMonitor. The event
// reader sees its stream close and ends.
func (v *vm) closeMonitor() {
	v.mu.Lock()
	dom := v.dom
	v.dom = nil
	v.monitorClosed = true
	v.mu.Unlock()
	if dom != nil {
		dom.Close()
	}
}

// chanOf wraps a finished connection for discardMonitor.
func chanOf(r monitorConn) <-chan monitorConn {
	ch := make(chan monitorConn, 1)
	ch <- r
	return ch
}

// ioErrorLog logs a VM's disk I/O errors: the first of each drive, then
// one line per ioErrorEvery with how many there were (a guest retries a
// failing write many times a second).
type ioErrorLog struct {
	mu     sync.Mutex
	drives map[string]*ioErrorCount
}

type ioErrorCount struct {
	last   time.Time
	missed int
}

const ioErrorEvery = 10 * time.Second

func (l *ioErrorLog) report(vm, drive, op, reason string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.drives == nil {
		l.drives = map[string]*ioErrorCount{}
	}
	c := l.drives[drive]
	if c == nil {
		c = &ioErrorCount{}
		l.drives[drive] = c
	}
	if !c.last.IsZero() && time.Since(c.last) < ioErrorEvery {
		c.missed++
		return
	}
	slog.Warn("disk I/O error reported to the guest", "vm", vm, "drive", drive, "operation", op, "reason", reason, "since_last_line", c.missed)
	c.last, c.missed = time.Now(), 0
}

// portState follows the guest's side of the agent port: how many times the
// guest opened it, and whether it is open now.
type portState struct {
	mu     sync.Mutex
	opens  int
	open   bool
	notify chan struct{} // closed and replaced on every change
}

func (p *portState) changed(open bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if open {
		p.opens++
	}
	p.open = open
	if p.notify != nil {
		close(p.notify)
	}
	p.notify = make(chan struct{})
}

// waitOpen waits until the guest has opened the port at least n times and
// has it open, or done is closed.
func (p *portState) waitOpen(n int, done <-chan struct{}) bool {
	for {
		p.mu.Lock()
		if p.opens >= n && p.open {
			p.mu.Unlock()
			return true
		}
		if p.notify == nil {
			p.notify = make(chan struct{})
		}
		ch := p.notify
		p.mu.Unlock()
		select {
		case <-ch:
		case <-done:
			return false
		}
	}
}
