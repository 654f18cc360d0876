// Package testcontrol is an in-process fake control plane for agent tests:
// a real MQTT broker (the embedded mochi server on a free loopback port)
// plus the control plane's side of the wire protocol. It publishes desired
// state, serves artifact chunks from the artifacts it holds, records every
// fetch request and everything devices report, and has a fetch hook to
// delay or drop chunk answers.
package testcontrol

import (
	"encoding/json"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/starling-edge/starling/shared/trust"
	"github.com/starling-edge/starling/shared/wire"
)

// Request is one fetch request a device made.
type Request struct {
	Device string
	wire.FetchRequest
}

// Action tells the fake how to answer one fetch request.
type Action struct {
	Delay time.Duration // answer after this long
	Drop  bool          // never answer
}

// Hook decides how a fetch request is answered. It runs on the broker's
// delivery path and must not block.
type Hook func(Request) Action

// Control is the fake control plane.
type Control struct {
	tb     testing.TB
	srv    *mqtt.Server
	addr   string
	done   chan struct{}
	wg     sync.WaitGroup
	closed sync.Once

	mu        sync.Mutex
	artifacts map[string][]byte
	hook      Hook
	requests  []Request
	reported  map[string]wire.ReportedState
	events    map[string][]wire.Event
	status    map[string]string
}

// Start runs a broker on a free 127.0.0.1 port; it stops when the test ends.
func Start(tb testing.TB) *Control {
	tb.Helper()
	srv := mqtt.New(&mqtt.Options{
		InlineClient: true,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		tb.Fatal(err)
	}
	tcp := listeners.NewTCP(listeners.Config{ID: "tcp", Address: "127.0.0.1:0"})
	if err := srv.AddListener(tcp); err != nil {
		tb.Fatal(err)
	}
	c := &Control{
		tb: tb, srv: srv, addr: tcp.Address(), done: make(chan struct{}),
		artifacts: map[string][]byte{},
		reported:  map[string]wire.ReportedState{},
		events:    map[string][]wire.Event{},
		status:    map[string]string{},
	}
	subs := []struct {
		filter string
		fn     mqtt.InlineSubFn
	}{
		{wire.Prefix + "+/" + wire.FetchReq, c.onFetch},
		{wire.Prefix + "+/" + wire.Reported, c.onReported},
		{wire.Prefix + "+/" + wire.Events, c.onEvent},
		{wire.Prefix + "+/" + wire.Status, c.onStatus},
	}
	for i, s := range subs {
		if err := srv.Subscribe(s.filter, i+1, s.fn); err != nil {
			tb.Fatal(err)
		}
	}
	if err := srv.Serve(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(c.Close)
	return c
}

// Broker returns the broker URL for agents: mqtt://127.0.0.1:port.
func (c *Control) Broker() string { return "mqtt://" + c.addr }

// Close stops answering and shuts the broker down. Tests need not call it.
func (c *Control) Close() {
	c.closed.Do(func() {
		close(c.done)
		c.wg.Wait()
		c.srv.Close()
	})
}

// AddArtifact makes data fetchable by its digest, which it returns.
func (c *Control) AddArtifact(data []byte) string {
	d := trust.Digest(data)
	c.mu.Lock()
	c.artifacts[d] = data
	c.mu.Unlock()
	return d
}

// ServeAs serves data under a digest that is not its own: the fault of a
// control plane or network that hands out tampered bytes.
func (c *Control) ServeAs(digest string, data []byte) {
	c.mu.Lock()
	c.artifacts[digest] = data
	c.mu.Unlock()
}

// SetFetchHook installs (or with nil removes) the fetch hook.
func (c *Control) SetFetchHook(h Hook) {
	c.mu.Lock()
	c.hook = h
	c.mu.Unlock()
}

// PublishDesired publishes a device's desired state, retained, QoS 1.
func (c *Control) PublishDesired(deviceID string, ds wire.DesiredState) {
	c.tb.Helper()
	b, err := json.Marshal(ds)
	if err != nil {
		c.tb.Fatal(err)
	}
	if err := c.srv.Publish(wire.DeviceTopic(deviceID, wire.Desired), b, true, 1); err != nil {
		c.tb.Fatal(err)
	}
}

// Requests returns the fetch requests a device made, in arrival order.
func (c *Control) Requests(deviceID string) []Request {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Request
	for _, r := range c.requests {
		if r.Device == deviceID {
			out = append(out, r)
		}
	}
	return out
}

// Reported returns a device's latest reported state.
func (c *Control) Reported(deviceID string) (wire.ReportedState, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	rs, ok := c.reported[deviceID]
	return rs, ok
}

// Events returns the events a device sent, in order.
func (c *Control) Events(deviceID string) []wire.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]wire.Event(nil), c.events[deviceID]...)
}

// Status returns a device's last status ("online", "offline" or "").
func (c *Control) Status(deviceID string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status[deviceID]
}

// Wait polls cond until it holds, failing the test after timeout.
func Wait(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ModelState returns the state a device last reported for name:version.
func (c *Control) ModelState(deviceID, name, version string) (wire.ModelStatus, bool) {
	rs, _ := c.Reported(deviceID)
	for _, m := range rs.Models {
		if m.Name == name && m.Version == version {
			return m, true
		}
	}
	return wire.ModelStatus{}, false
}

func (c *Control) onFetch(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
	dev, _, ok := wire.ParseDeviceTopic(pk.TopicName)
	if !ok {
		return
	}
	var fr wire.FetchRequest
	if err := json.Unmarshal(pk.Payload, &fr); err != nil {
		return
	}
	req := Request{Device: dev, FetchRequest: fr}
	c.mu.Lock()
	c.requests = append(c.requests, req)
	hook := c.hook
	c.mu.Unlock()
	var act Action
	if hook != nil {
		act = hook(req)
	}
	if act.Drop {
		return
	}
	// Answer from an owned goroutine: publishing from inside the broker's
	// delivery callback would re-enter it.
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		if act.Delay > 0 {
			t := time.NewTimer(act.Delay)
			defer t.Stop()
			select {
			case <-t.C:
			case <-c.done:
				return
			}
		}
		select {
		case <-c.done:
			return
		default:
		}
		c.answer(req)
	}()
}

func (c *Control) answer(req Request) {
	c.mu.Lock()
	art, ok := c.artifacts[req.Digest]
	c.mu.Unlock()
	h := wire.ChunkHeader{ID: req.ID, Digest: req.Digest, Offset: req.Offset, Total: int64(len(art))}
	var data []byte
	switch {
	case !ok:
		h.Error = "unknown artifact " + req.Digest
	case req.Offset < 0 || req.Length <= 0 || req.Length > wire.MaxChunk || req.Offset >= int64(len(art)):
		h.Error = "bad range"
	default:
		data = art[req.Offset:min(req.Offset+req.Length, int64(len(art)))]
	}
	msg, err := wire.EncodeChunk(h, data)
	if err != nil {
		return
	}
	c.srv.Publish(wire.DeviceTopic(req.Device, wire.FetchResp), msg, false, 1)
}

func (c *Control) onReported(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
	dev, _, _ := wire.ParseDeviceTopic(pk.TopicName)
	var rs wire.ReportedState
	if json.Unmarshal(pk.Payload, &rs) != nil {
		return
	}
	c.mu.Lock()
	c.reported[dev] = rs
	c.mu.Unlock()
}

func (c *Control) onEvent(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
	dev, _, _ := wire.ParseDeviceTopic(pk.TopicName)
	var e wire.Event
	if json.Unmarshal(pk.Payload, &e) != nil {
		return
	}
	c.mu.Lock()
	c.events[dev] = append(c.events[dev], e)
	c.mu.Unlock()
}

func (c *Control) onStatus(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
	dev, _, _ := wire.ParseDeviceTopic(pk.TopicName)
	c.mu.Lock()
	c.status[dev] = string(pk.Payload)
	c.mu.Unlock()
}
