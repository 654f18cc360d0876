package uplink

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/starling-edge/starling/agent/internal/testcontrol"
	"github.com/starling-edge/starling/shared/wire"
)

const dev = "dev-1"

// startSession runs a session against ctl until the test ends.
func startSession(t *testing.T, ctl *testcontrol.Control, opts Options) *Session {
	t.Helper()
	opts.Broker, opts.DeviceID = ctl.Broker(), dev
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	testcontrol.Wait(t, 5*time.Second, "online status", func() bool { return ctl.Status(dev) == wire.Online })
	return s
}

func TestNewRejectsBadOptions(t *testing.T) {
	tests := []Options{
		{Broker: "mqtt://127.0.0.1:1883", DeviceID: ""},
		{Broker: "mqtt://127.0.0.1:1883", DeviceID: "bad/id"},
		{Broker: "http://127.0.0.1:1883", DeviceID: "d"},
		{Broker: "mqtt://127.0.0.1:1883", DeviceID: "d", ChunkSize: wire.MaxChunk + 1},
		{Broker: "mqtt://127.0.0.1", DeviceID: "d"},
		// TLS needs the device certificate; a certificate needs TLS.
		{Broker: "mqtts://127.0.0.1:8883", DeviceID: "d"},
		{Broker: "mqtt://127.0.0.1:1883", DeviceID: "d", TLSConfig: &tls.Config{}},
	}
	for _, o := range tests {
		if _, err := New(o); !errors.Is(err, ErrOptions) {
			t.Errorf("New(%+v) = %v, want ErrOptions", o, err)
		}
	}
}

func TestDesiredReportEventsAndStatus(t *testing.T) {
	ctl := testcontrol.Start(t)
	got := make(chan wire.DesiredState, 4)
	s := startSession(t, ctl, Options{OnDesired: func(ds wire.DesiredState) { got <- ds }})

	ctl.PublishDesired(dev, wire.DesiredState{Generation: 7})
	select {
	case ds := <-got:
		if ds.Generation != 7 {
			t.Fatalf("desired generation %d, want 7", ds.Generation)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no desired state delivered")
	}
	ctx := context.Background()
	if err := s.Report(ctx, wire.ReportedState{DeviceID: dev, Generation: 7}); err != nil {
		t.Fatal(err)
	}
	if err := s.Event(ctx, wire.Event{Kind: wire.EventRejected, Check: "digest", Message: "m"}); err != nil {
		t.Fatal(err)
	}
	testcontrol.Wait(t, 5*time.Second, "report and event", func() bool {
		rs, ok := ctl.Reported(dev)
		return ok && rs.Generation == 7 && len(ctl.Events(dev)) == 1
	})
	if e := ctl.Events(dev)[0]; e.Check != "digest" {
		t.Errorf("event %+v, want check digest", e)
	}
}

func TestFetchWindowAndRetry(t *testing.T) {
	ctl := testcontrol.Start(t)
	data := bytes.Repeat([]byte("0123456789abcdef"), 4000) // 64000 bytes
	digest := ctl.AddArtifact(data)
	var mu sync.Mutex
	dropped := map[int64]bool{}
	ctl.SetFetchHook(func(r testcontrol.Request) testcontrol.Action {
		mu.Lock()
		defer mu.Unlock()
		if r.Offset == 8192 && !dropped[r.Offset] { // lose the first answer once
			dropped[r.Offset] = true
			return testcontrol.Action{Drop: true}
		}
		return testcontrol.Action{}
	})
	s := startSession(t, ctl, Options{ChunkSize: 4096, ChunkTimeout: 200 * time.Millisecond})

	buf := make([]byte, len(data))
	var n int
	err := s.Fetch(context.Background(), digest, int64(len(data)), 4096, func(off int64, b []byte) error {
		copy(buf[off:], b)
		n += len(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != len(data)-4096 || !bytes.Equal(buf[4096:], data[4096:]) {
		t.Fatalf("fetched %d bytes, content equal %v", n, bytes.Equal(buf[4096:], data[4096:]))
	}
	reqs := ctl.Requests(dev)
	if reqs[0].Offset != 4096 {
		t.Errorf("first request offset %d, want 4096", reqs[0].Offset)
	}
	var asked8192 int
	for _, r := range reqs {
		if r.Offset == 8192 {
			asked8192++
		}
	}
	if asked8192 != 2 {
		t.Errorf("offset 8192 asked %d times, want 2 (one drop, one retry)", asked8192)
	}
}

func TestFetchErrors(t *testing.T) {
	ctl := testcontrol.Start(t)
	data := []byte("some artifact bytes")
	digest := ctl.AddArtifact(data)
	s := startSession(t, ctl, Options{ChunkTimeout: 50 * time.Millisecond, ChunkAttempts: 2})
	sink := func(int64, []byte) error { return nil }

	err := s.Fetch(context.Background(), "sha256:"+string(bytes.Repeat([]byte("0"), 64)), 10, 0, sink)
	if !errors.Is(err, ErrRemote) {
		t.Errorf("unknown digest: %v, want ErrRemote", err)
	}
	ctl.SetFetchHook(func(testcontrol.Request) testcontrol.Action { return testcontrol.Action{Drop: true} })
	err = s.Fetch(context.Background(), digest, int64(len(data)), 0, sink)
	if !errors.Is(err, ErrFetchTimeout) {
		t.Errorf("all answers dropped: %v, want ErrFetchTimeout", err)
	}
	ctl.SetFetchHook(nil)
	boom := errors.New("disk full")
	err = s.Fetch(context.Background(), digest, int64(len(data)), 0, func(int64, []byte) error { return boom })
	if !errors.Is(err, boom) {
		t.Errorf("sink error: %v, want it returned", err)
	}
}

func TestOfflineStatusOnStop(t *testing.T) {
	ctl := testcontrol.Start(t)
	s, err := New(Options{Broker: ctl.Broker(), DeviceID: dev, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	// Events sent before the first connect are queued and delivered.
	if err := s.Event(context.Background(), wire.Event{Kind: wire.EventFailed, Message: "early"}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	testcontrol.Wait(t, 5*time.Second, "online and queued event", func() bool {
		return ctl.Status(dev) == wire.Online && len(ctl.Events(dev)) == 1
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	testcontrol.Wait(t, 5*time.Second, "offline status", func() bool { return ctl.Status(dev) == wire.Offline })
}

func TestJitterBackoffBounds(t *testing.T) {
	b := JitterBackoff(100*time.Millisecond, time.Second)
	for attempt, max := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 10: time.Second} {
		for range 50 {
			d := b(attempt)
			if d < max/2 || d > max {
				t.Fatalf("attempt %d: %s outside [%s, %s]", attempt, d, max/2, max)
			}
		}
	}
}
