package shim

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	eventsapi "github.com/containerd/containerd/api/services/ttrpc/events/v1"
	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// eventsServer is containerd's side of the shim's events: a real ttrpc
// server of containerd.services.events.ttrpc.v1.Events on a unix socket.
type eventsServer struct {
	srv       *ttrpc.Server
	forwarded chan *eventsapi.ForwardRequest
}

func (e *eventsServer) Forward(ctx context.Context, r *eventsapi.ForwardRequest) (*emptypb.Empty, error) {
	select {
	case e.forwarded <- r:
	default:
		return nil, errors.New("eventsServer: too many events unread")
	}
	return &emptypb.Empty{}, nil
}

// serveEvents serves an events service on path until the test ends or
// stop is called. stop closes every connection at once, as a containerd
// that exits does: ttrpc's own Close lets a connection finish what it
// reads first.
func serveEvents(t *testing.T, path string) (e *eventsServer, stop func()) {
	t.Helper()
	srv, err := ttrpc.NewServer()
	if err != nil {
		t.Fatal(err)
	}
	e = &eventsServer{srv: srv, forwarded: make(chan *eventsapi.ForwardRequest, 16)}
	eventsapi.RegisterTTRPCEventsService(srv, e)
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	tl := &trackingListener{Listener: l}
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(context.Background(), tl)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			tl.closeAll()
			srv.Close()
			<-served
		})
	}
	t.Cleanup(stop)
	return e, stop
}

// trackingListener keeps the connections it accepted, to close them.
type trackingListener struct {
	net.Listener
	mu     sync.Mutex
	conns  []net.Conn
	closed bool
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		c.Close()
		return nil, net.ErrClosed
	}
	l.conns = append(l.conns, c)
	return c, nil
}

func (l *trackingListener) closeAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	l.Listener.Close()
	for _, c := range l.conns {
		c.Close()
	}
}

// next returns the next forwarded event.
func (e *eventsServer) next(t *testing.T) *eventsapi.ForwardRequest {
	t.Helper()
	select {
	case r := <-e.forwarded:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no event forwarded within 10 s")
		return nil
	}
}

// eventsSocket is a socket path short enough for sun_path whatever the
// test's name.
func eventsSocket(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "ev")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "ttrpc.sock")
}

// checkEnvelope checks what containerd received for Publish(topic, want)
// from a shim of namespace.
func checkEnvelope(t *testing.T, r *eventsapi.ForwardRequest, namespace, topic string, want proto.Message) {
	t.Helper()
	env := r.GetEnvelope()
	if env.GetNamespace() != namespace || env.GetTopic() != topic {
		t.Errorf("envelope: namespace %q, topic %q; want %q, %q", env.GetNamespace(), env.GetTopic(), namespace, topic)
	}
	if ts := env.GetTimestamp(); ts == nil || time.Since(ts.AsTime()).Abs() > time.Minute {
		t.Errorf("envelope timestamp %v: want now", ts)
	}
	// containerd looks the event's type up by its name alone.
	wantURL := string(want.ProtoReflect().Descriptor().FullName())
	if got := env.GetEvent().GetTypeUrl(); got != wantURL {
		t.Errorf("event type URL %q, want %q", got, wantURL)
	}
	got, err := anypb.UnmarshalNew(env.GetEvent(), proto.UnmarshalOptions{})
	if err != nil {
		t.Fatalf("decode the event: %v", err)
	}
	if !proto.Equal(got, want) {
		t.Errorf("event %v, want %v", got, want)
	}
}

func TestPublish(t *testing.T) {
	sock := eventsSocket(t)
	srv, _ := serveEvents(t, sock)
	// As containerd sets TTRPC_ADDRESS.
	p := newPublisher("unix://"+sock, "ns1")
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	exit := &eventstypes.TaskExit{ContainerID: "c1", ID: "c1", Pid: 42, ExitStatus: 7, ExitedAt: timestamppb.New(time.Unix(1_700_000_000, 5))}
	if err := p.Publish(ctx, topicExit, exit); err != nil {
		t.Fatalf("Publish = %v", err)
	}
	r := srv.next(t)
	checkEnvelope(t, r, "ns1", topicExit, exit)
	if u := r.GetEnvelope().GetEvent().GetTypeUrl(); u != "containerd.events.TaskExit" || strings.HasPrefix(u, "type.googleapis.com/") {
		t.Errorf("event type URL %q, want containerd.events.TaskExit", u)
	}

	// The next events go over the same connection.
	for _, ev := range []struct {
		topic string
		event proto.Message
	}{
		{topicCreate, &eventstypes.TaskCreate{ContainerID: "c1", Bundle: "/b", IO: &eventstypes.TaskIO{Stdout: "/f/out", Terminal: true}, Pid: 42}},
		{topicOOM, &eventstypes.TaskOOM{ContainerID: "c1"}},
		{topicDelete, &eventstypes.TaskDelete{ContainerID: "c1", ID: "c1", Pid: 42, ExitStatus: 137}},
	} {
		if err := p.Publish(ctx, ev.topic, ev.event); err != nil {
			t.Fatalf("Publish(%s) = %v", ev.topic, err)
		}
		checkEnvelope(t, srv.next(t), "ns1", ev.topic, ev.event)
	}
}

// containerd restarting: the connection the publisher holds is dead, and
// the next Publish reaches the new containerd on the same socket.
func TestPublishReconnects(t *testing.T) {
	sock := eventsSocket(t)
	first, stopFirst := serveEvents(t, sock)
	p := newPublisher(sock, "default")
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := &eventstypes.TaskStart{ContainerID: "c1", Pid: 1}
	if err := p.Publish(ctx, topicStart, start); err != nil {
		t.Fatalf("Publish = %v", err)
	}
	checkEnvelope(t, first.next(t), "default", topicStart, start)

	stopFirst()
	second, stopSecond := serveEvents(t, sock)
	exit := &eventstypes.TaskExit{ContainerID: "c1", ID: "c1", Pid: 1, ExitStatus: 3}
	if err := p.Publish(ctx, topicExit, exit); err != nil {
		t.Fatalf("Publish after the server restarted = %v", err)
	}
	checkEnvelope(t, second.next(t), "default", topicExit, exit)

	// No server: Publish fails, in bounded time, and the one after the
	// server is back goes through.
	stopSecond()
	began := time.Now()
	if err := p.Publish(ctx, topicExit, exit); err == nil {
		t.Fatal("Publish without a server = nil, want an error")
	}
	if took := time.Since(began); took > 10*time.Second {
		t.Errorf("Publish without a server took %v", took)
	}
	third, _ := serveEvents(t, sock)
	del := &eventstypes.TaskDelete{ContainerID: "c1", ID: "c1", Pid: 1, ExitStatus: 3}
	if err := p.Publish(ctx, topicDelete, del); err != nil {
		t.Fatalf("Publish once the server is back = %v", err)
	}
	checkEnvelope(t, third.next(t), "default", topicDelete, del)
}

func TestPublishFailures(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ev := &eventstypes.TaskOOM{ContainerID: "c1"}
	if err := newPublisher("", "default").Publish(ctx, topicOOM, ev); err == nil {
		t.Error("Publish without an address = nil, want an error")
	}
	if err := newPublisher(eventsSocket(t), "default").Publish(ctx, topicOOM, ev); err == nil {
		t.Error("Publish to a socket nobody serves = nil, want an error")
	}
	// A caller's deadline bounds the retry.
	done, cancelDone := context.WithCancel(context.Background())
	cancelDone()
	if err := newPublisher(eventsSocket(t), "default").Publish(done, topicOOM, ev); err == nil {
		t.Error("Publish with an ended context = nil, want an error")
	}
}
