package events

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

func ev(action string, at time.Time) Event {
	return Event{Type: TypeContainer, Action: action, ID: "c1", Time: at}
}

func actions(es []Event) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Action)
	}
	return out
}

func TestBusReplayAndLive(t *testing.T) {
	b := NewBus(3)
	t0 := time.Unix(1000, 0)
	for i, a := range []string{"create", "start", "die", "destroy", "create"} {
		b.Publish(ev(a, t0.Add(time.Duration(i)*time.Second)))
	}
	for _, tc := range []struct {
		since time.Time
		want  string
	}{
		{time.Time{}, "[]"},                           // no since: live only
		{t0, "[die destroy create]"},                  // the ring keeps the last 3
		{t0.Add(3 * time.Second), "[destroy create]"}, // since is inclusive
		{t0.Add(time.Hour), "[]"},
	} {
		past, sub := b.Subscribe(tc.since, nil)
		if got := fmt.Sprint(actions(past)); got != tc.want {
			t.Errorf("Subscribe(since %v) replayed %s, want %s", tc.since.Unix(), got, tc.want)
		}
		sub.Close()
		sub.Close() // idempotent
	}

	past, sub := b.Subscribe(t0.Add(4*time.Second), func(e Event) bool { return e.Action != "skip" })
	defer sub.Close()
	b.Publish(ev("skip", time.Time{}))
	b.Publish(ev("start", time.Time{}))
	if got := fmt.Sprint(actions(past)); got != "[create]" {
		t.Errorf("replay = %s, want [create]", got)
	}
	select {
	case e := <-sub.C():
		if e.Action != "start" || e.Time.IsZero() {
			t.Errorf("live event = %+v, want start with its time set", e)
		}
	case <-time.After(time.Second):
		t.Fatal("no live event")
	}
}

func TestBusTimeNeverGoesBack(t *testing.T) {
	b := NewBus(4)
	t0 := time.Unix(2000, 0)
	b.Publish(ev("a", t0))
	b.Publish(ev("b", t0.Add(-time.Minute))) // the clock stepped back
	past, sub := b.Subscribe(t0, nil)
	sub.Close()
	if got := fmt.Sprint(actions(past)); got != "[a b]" {
		t.Errorf("replay since the first event = %s, want [a b]", got)
	}
}

func TestBusDisconnectsSlowSubscriber(t *testing.T) {
	b := NewBus(0)
	_, slow := b.Subscribe(time.Time{}, nil)
	_, fast := b.Subscribe(time.Time{}, nil)
	// The reader acknowledges each event; the publisher waits for that
	// only to keep the reader in step, never for the slow one.
	acks := make(chan struct{})
	go func() {
		for range fast.C() {
			acks <- struct{}{}
		}
		close(acks)
	}()
	published := make(chan struct{})
	go func() {
		defer close(published)
		for i := 0; i < subscriberBuffer*4; i++ {
			b.Publish(ev("tick", time.Time{}))
			<-acks
		}
	}()
	select {
	case <-published:
	case <-time.After(10 * time.Second):
		t.Fatal("Publish blocked on a subscriber that does not read")
	}
	n := 0
	for range slow.C() {
		n++
	}
	if n != subscriberBuffer || !errors.Is(slow.Err(), ErrSlowSubscriber) {
		t.Errorf("slow subscriber got %d events then Err %v; want %d then ErrSlowSubscriber", n, slow.Err(), subscriberBuffer)
	}
	if fast.Err() != nil {
		t.Errorf("a subscriber that keeps up was disconnected: %v", fast.Err())
	}
	fast.Close()
	if _, open := <-acks; open {
		t.Error("the reader still got events after Close")
	}
	if fast.Err() != nil {
		t.Errorf("a closed subscription's Err = %v, want nil", fast.Err())
	}
}

func TestFilter(t *testing.T) {
	die := Event{Type: TypeContainer, Action: "die", ID: "abcdef0123", Attributes: map[string]string{
		"name": "web", "image": "busybox", "exitCode": "0", "com.example.tier": "front"}}
	exec := Event{Type: TypeContainer, Action: "exec_start: sh -c true", ID: "abcdef0123", Attributes: map[string]string{"name": "web", "image": "busybox"}}
	pull := Event{Type: TypeImage, Action: "pull", ID: "busybox:latest", Attributes: map[string]string{"name": "busybox:latest"}}
	tag := Event{Type: TypeImage, Action: "tag", ID: "sha256:feedface00", Attributes: map[string]string{"name": "busybox:1"}}
	pinned := Event{Type: TypeContainer, Action: "start", ID: "abcdef0123", Attributes: map[string]string{"name": "web", "image": "busybox:1.36@sha256:" + strings.Repeat("0", 64)}}
	private := Event{Type: TypeContainer, Action: "start", ID: "abcdef0123", Attributes: map[string]string{"name": "web", "image": "127.0.0.1:5000/team/app:3"}}
	vol := Event{Type: TypeVolume, Action: "create", ID: "data", Attributes: map[string]string{"driver": "local"}}
	netConnect := Event{Type: TypeNetwork, Action: "connect", ID: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		Attributes: map[string]string{"name": "web", "type": "bridge", "container": "abcdef"}}
	for _, tc := range []struct {
		terms map[string][]string
		e     Event
		want  bool
	}{
		{nil, die, true},
		{map[string][]string{"type": {"container"}}, die, true},
		{map[string][]string{"type": {"image"}}, die, false},
		{map[string][]string{"type": {"image", "container"}}, die, true},
		{map[string][]string{"event": {"die"}}, die, true},
		{map[string][]string{"event": {"start"}}, die, false},
		{map[string][]string{"event": {"exec_start"}}, exec, true},
		{map[string][]string{"container": {"web"}}, die, true},
		{map[string][]string{"container": {"abcdef"}}, die, true},
		{map[string][]string{"container": {"db"}}, die, false},
		{map[string][]string{"container": {"web"}}, pull, false},
		{map[string][]string{"image": {"busybox"}}, die, true},
		{map[string][]string{"image": {"busybox:latest"}}, die, true},
		{map[string][]string{"image": {"busybox:latest"}}, pull, true},
		{map[string][]string{"image": {"alpine"}}, pull, false},
		{map[string][]string{"image": {"busybox"}}, pull, true},
		{map[string][]string{"image": {"busybox:1"}}, tag, true},
		{map[string][]string{"image": {"sha256:feedface"}}, tag, true},
		{map[string][]string{"image": {"feedface"}}, tag, true},
		{map[string][]string{"image": {"fee"}}, tag, false},
		// A repository name matches every tag of it, as dockerd's stripTag.
		{map[string][]string{"image": {"busybox"}}, tag, true},
		{map[string][]string{"image": {"busybox:2"}}, tag, false},
		{map[string][]string{"image": {"busybox"}}, pinned, true},
		{map[string][]string{"image": {"alpine"}}, pinned, false},
		{map[string][]string{"image": {"127.0.0.1:5000/team/app"}}, private, true},
		{map[string][]string{"image": {"team/app"}}, private, false},
		{map[string][]string{"label": {"com.example.tier"}}, die, true},
		{map[string][]string{"label": {"com.example.tier=front"}}, die, true},
		{map[string][]string{"label": {"com.example.tier=back"}}, die, false},
		// Every label term must match (Docker's MatchKVList), unlike other keys.
		{map[string][]string{"label": {"com.example.tier", "exitCode=0"}}, die, true},
		{map[string][]string{"label": {"com.example.tier=front", "com.example.tier=back"}}, die, false},
		{map[string][]string{"label": {"com.example.tier", "nosuch"}}, die, false},
		{map[string][]string{"volume": {"data"}}, vol, true},
		{map[string][]string{"volume": {"data"}}, die, false},
		{map[string][]string{"network": {"web"}}, netConnect, true},
		{map[string][]string{"network": {"0123456789ab"}}, netConnect, true},
		{map[string][]string{"network": {"db"}}, netConnect, false},
		{map[string][]string{"network": {"web"}}, die, false},
		{map[string][]string{"type": {"network"}, "event": {"connect"}}, netConnect, true},
		{map[string][]string{"type": {"container"}, "event": {"die"}, "container": {"db"}}, die, false},
		{map[string][]string{"scope": {"local"}}, die, true},
	} {
		f, err := NewFilter(tc.terms)
		if err != nil {
			t.Fatalf("NewFilter(%v) = %v", tc.terms, err)
		}
		if got := f.Match(tc.e); got != tc.want {
			t.Errorf("filter %v on %s %s = %v, want %v", tc.terms, tc.e.Type, tc.e.Action, got, tc.want)
		}
	}
}

func TestNewFilterRejects(t *testing.T) {
	for _, tc := range []struct {
		terms map[string][]string
		msg   string
	}{
		{map[string][]string{"colour": {"red"}}, "invalid filter 'colour'"},
		{map[string][]string{"type": {"spaceship"}}, "invalid filter 'type=spaceship'"},
		{map[string][]string{"scope": {"galaxy"}}, "invalid filter 'scope=galaxy'"},
	} {
		_, err := NewFilter(tc.terms)
		if !errdefs.IsInvalidArgument(err) || err.Error() != tc.msg {
			t.Errorf("NewFilter(%v) = %v, want invalid argument %q", tc.terms, err, tc.msg)
		}
	}
}
