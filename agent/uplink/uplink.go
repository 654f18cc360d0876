// Package uplink is the agent's MQTT session with the control plane, over
// TLS with the device certificate (mqtts://; plain mqtt:// only for
// development listeners): a persistent session (client id = device id,
// clean session off, QoS 1) with a retained "offline" last will, a retained "online" status after each
// connect, reconnection with jittered exponential backoff, and resubscription
// on every connect (which also redelivers the retained desired state). On top
// of it: the desired-state feed, retained reported state, events, and the
// chunked artifact fetch over fetch/req and fetch/resp (or HTTPFetcher's
// range requests to the device API).
package uplink

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/starling-edge/starling/shared/wire"
)

// Backoff returns how long to wait before reconnect attempt n (n >= 1).
type Backoff func(attempt int) time.Duration

// JitterBackoff doubles from base up to max and picks uniformly in the upper
// half of that interval, so a fleet that lost its broker does not reconnect
// in lock step.
func JitterBackoff(base, max time.Duration) Backoff {
	return func(attempt int) time.Duration {
		d := base
		for i := 1; i < attempt && d < max; i++ {
			d *= 2
		}
		d = min(d, max)
		half := d / 2
		return half + time.Duration(mrand.Int64N(int64(half)+1))
	}
}

// Options configure a Session. Broker and DeviceID are required.
type Options struct {
	// Broker is "mqtts://host:port" (TLS; also ssl:// or tls://) or
	// "mqtt://host:port" (plain; also tcp://, for development listeners).
	Broker string
	// TLSConfig is required for mqtts:// and refused with mqtt://: the
	// device certificate and the fleet CA as the only root
	// (enroll.Identity.TLSConfig). The broker takes the device id from the
	// certificate, so DeviceID must be the certificate's.
	TLSConfig *tls.Config
	// DeviceID is the MQTT client id and the topic subtree.
	DeviceID string
	// ConnectTimeout bounds one connection attempt; default 10s.
	ConnectTimeout time.Duration
	// KeepAlive is the MQTT keep-alive; default 30s.
	KeepAlive time.Duration
	// Backoff paces reconnect attempts; default JitterBackoff(250ms, 30s).
	Backoff Backoff
	// ChunkSize is the fetch chunk length; default 256 KiB, at most
	// wire.MaxChunk.
	ChunkSize int
	// Window is how many chunk requests may be outstanding; default 4.
	// Each costs up to ChunkSize of memory while in flight.
	Window int
	// ChunkTimeout is how long to wait for one chunk before asking again;
	// default 15s.
	ChunkTimeout time.Duration
	// ChunkAttempts is how many times one chunk is asked for before the
	// fetch fails with ErrFetchTimeout; default 5.
	ChunkAttempts int
	// MaxPendingEvents bounds the events held while offline; the oldest
	// are dropped first; default 64.
	MaxPendingEvents int
	// OnDesired receives every desired state. It runs on the MQTT
	// client's delivery goroutine.
	// IMPORTANT: it must not block (hand the state off and return).
	OnDesired func(wire.DesiredState)
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Session is one device's MQTT session. Create it with New, drive it with
// Run; Report, Event and Fetch are safe for concurrent use.
type Session struct {
	opts   Options
	log    *slog.Logger
	client mqtt.Client
	lost   chan struct{}
	idBase string
	seq    atomic.Uint64
	// ready is set once a connect, including paho's resend of stored
	// messages, has finished, and cleared when the connection drops.
	// IMPORTANT: nothing is published while it is false: paho's resume
	// marks stored packets as duplicates in place, which races with a
	// concurrent first send of the same packet.
	ready atomic.Bool

	mu      sync.Mutex
	report  []byte   // latest reported state, republished on connect
	events  [][]byte // events held while offline (bounded)
	waiters map[string]chan<- chunk
	// metaWaiters are FetchMetadata calls waiting for their answer.
	metaWaiters map[string]chan<- wire.MetadataResponse
}

type chunk struct {
	h    wire.ChunkHeader
	data []byte
}

// New checks opts and prepares a session; nothing connects until Run.
func New(opts Options) (*Session, error) {
	if !wire.ValidDeviceID(opts.DeviceID) {
		return nil, fmt.Errorf("uplink.New: device id %q (want 1-64 of [A-Za-z0-9._-]): %w", opts.DeviceID, ErrOptions)
	}
	if err := ParseBroker(opts.Broker); err != nil {
		return nil, fmt.Errorf("uplink.New: %w", err)
	}
	u, _ := url.Parse(opts.Broker)
	server := "tcp://" + u.Host
	switch {
	case TLSBroker(opts.Broker) && opts.TLSConfig == nil:
		return nil, fmt.Errorf("uplink.New: broker %s uses TLS but no device certificate is configured (enroll the device first): %w", opts.Broker, ErrOptions)
	case TLSBroker(opts.Broker):
		server = "ssl://" + u.Host
	case opts.TLSConfig != nil:
		return nil, fmt.Errorf("uplink.New: the device has a certificate but broker %s is plain MQTT; use mqtts://: %w", opts.Broker, ErrOptions)
	}
	if opts.ChunkSize < 0 || opts.ChunkSize > wire.MaxChunk {
		return nil, fmt.Errorf("uplink.New: chunk size %d outside 1..%d: %w", opts.ChunkSize, wire.MaxChunk, ErrOptions)
	}
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = 10 * time.Second
	}
	if opts.KeepAlive <= 0 {
		opts.KeepAlive = 30 * time.Second
	}
	if opts.Backoff == nil {
		opts.Backoff = JitterBackoff(250*time.Millisecond, 30*time.Second)
	}
	if opts.ChunkSize == 0 {
		opts.ChunkSize = 256 << 10
	}
	if opts.Window <= 0 {
		opts.Window = 4
	}
	if opts.ChunkTimeout <= 0 {
		opts.ChunkTimeout = 15 * time.Second
	}
	if opts.ChunkAttempts <= 0 {
		opts.ChunkAttempts = 5
	}
	if opts.MaxPendingEvents <= 0 {
		opts.MaxPendingEvents = 64
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	var rb [6]byte
	rand.Read(rb[:])
	s := &Session{
		opts:        opts,
		log:         opts.Logger.With("component", "uplink"),
		lost:        make(chan struct{}, 1),
		idBase:      hex.EncodeToString(rb[:]),
		waiters:     map[string]chan<- chunk{},
		metaWaiters: map[string]chan<- wire.MetadataResponse{},
	}
	co := mqtt.NewClientOptions().
		AddBroker(server).
		SetClientID(opts.DeviceID).
		SetCleanSession(false).
		SetKeepAlive(opts.KeepAlive).
		SetConnectTimeout(opts.ConnectTimeout).
		SetAutoReconnect(false). // Run reconnects, with jitter
		SetConnectRetry(false).
		SetOrderMatters(true).
		SetTLSConfig(opts.TLSConfig).
		SetWill(s.topic(wire.Status), wire.Offline, 1, true).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			s.ready.Store(false)
			s.log.Warn("connection lost", "err", err)
			select {
			case s.lost <- struct{}{}:
			default:
			}
		})
	s.client = mqtt.NewClient(co)
	return s, nil
}

func (s *Session) topic(name string) string { return wire.DeviceTopic(s.opts.DeviceID, name) }

// Connected reports whether the session is connected now.
func (s *Session) Connected() bool { return s.ready.Load() && s.client.IsConnectionOpen() }

// Run connects and keeps the session connected until ctx ends, then
// publishes a retained "offline" status and disconnects. It returns nil
// when ctx ends.
func (s *Session) Run(ctx context.Context) error {
	defer s.shutdown()
	for attempt := 0; ; {
		select {
		case <-s.lost: // drop a stale loss signal
		default:
		}
		tok := s.client.Connect()
		select {
		case <-tok.Done():
		case <-ctx.Done():
			tok.WaitTimeout(s.opts.ConnectTimeout)
			return nil
		}
		if err := tok.Error(); err != nil {
			attempt++
			d := s.opts.Backoff(attempt)
			s.log.Warn("connect failed", "broker", s.opts.Broker, "attempt", attempt, "retry_in", d, "err", err)
			t := time.NewTimer(d)
			select {
			case <-t.C:
				continue
			case <-ctx.Done():
				t.Stop()
				return nil
			}
		}
		attempt = 0
		s.onConnect(s.client)
		select {
		case <-s.lost:
		case <-ctx.Done():
			return nil
		}
	}
}

func (s *Session) shutdown() {
	connected := s.Connected()
	s.ready.Store(false)
	if connected {
		// A clean disconnect suppresses the will, so say it ourselves.
		s.client.Publish(s.topic(wire.Status), 1, true, wire.Offline).WaitTimeout(time.Second)
	}
	s.client.Disconnect(250)
}

// onConnect runs on Run's goroutine after every successful connect.
func (s *Session) onConnect(c mqtt.Client) {
	s.log.Info("connected", "broker", s.opts.Broker, "device", s.opts.DeviceID)
	subs := map[string]byte{s.topic(wire.Desired): 1, s.topic(wire.FetchResp): 1, s.topic(wire.MetaResp): 1}
	tok := c.SubscribeMultiple(subs, s.route)
	if tok.WaitTimeout(s.opts.ConnectTimeout) && tok.Error() != nil {
		s.log.Error("subscribe failed", "err", tok.Error())
	}
	c.Publish(s.topic(wire.Status), 1, true, wire.Online)
	s.mu.Lock()
	report, events := s.report, s.events
	s.events = nil
	s.ready.Store(true) // under mu: Report and Event see either the queue or ready
	s.mu.Unlock()
	if report != nil {
		c.Publish(s.topic(wire.Reported), 1, true, report)
	}
	for _, e := range events {
		c.Publish(s.topic(wire.Events), 1, false, e)
	}
}

// route dispatches incoming messages. It must not block.
func (s *Session) route(_ mqtt.Client, m mqtt.Message) {
	_, name, ok := wire.ParseDeviceTopic(m.Topic())
	if !ok {
		return
	}
	switch name {
	case wire.Desired:
		var ds wire.DesiredState
		if err := json.Unmarshal(m.Payload(), &ds); err != nil {
			s.log.Error("desired state is not valid JSON; ignored", "err", err)
			return
		}
		if s.opts.OnDesired != nil {
			s.opts.OnDesired(ds)
		}
	case wire.MetaResp:
		s.routeMetadata(m.Payload())
	case wire.FetchResp:
		h, data, err := wire.DecodeChunk(m.Payload())
		if err != nil {
			s.log.Warn("bad fetch response; ignored", "err", err)
			return
		}
		s.mu.Lock()
		ch := s.waiters[h.ID]
		s.mu.Unlock()
		if ch == nil {
			return // a late answer to a request already retried or finished
		}
		select {
		case ch <- chunk{h, data}:
		default:
		}
	}
}

func (s *Session) publish(ctx context.Context, name string, retained bool, payload []byte) error {
	tok := s.client.Publish(s.topic(name), 1, retained, payload)
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Report publishes rs retained on the reported topic. While offline it is
// kept and published on the next connect (only the latest is kept).
func (s *Session) Report(ctx context.Context, rs wire.ReportedState) error {
	b, err := json.Marshal(rs)
	if err != nil {
		return fmt.Errorf("uplink.Report: %w", err)
	}
	s.mu.Lock()
	s.report = b
	ready := s.ready.Load()
	s.mu.Unlock()
	if !ready {
		return nil
	}
	if err := s.publish(ctx, wire.Reported, true, b); err != nil {
		return fmt.Errorf("uplink.Report: %w", err)
	}
	return nil
}

// Event publishes e on the events topic. While offline it is queued (at
// most Options.MaxPendingEvents, oldest dropped) and sent on the next
// connect.
func (s *Session) Event(ctx context.Context, e wire.Event) error {
	b, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("uplink.Event: %w", err)
	}
	s.mu.Lock()
	if !s.ready.Load() {
		if len(s.events) >= s.opts.MaxPendingEvents {
			s.events = s.events[1:]
		}
		s.events = append(s.events, b)
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	if err := s.publish(ctx, wire.Events, false, b); err != nil {
		return fmt.Errorf("uplink.Event %s: %w", e.Kind, err)
	}
	return nil
}

func (s *Session) register(id string, ch chan<- chunk) {
	s.mu.Lock()
	s.waiters[id] = ch
	s.mu.Unlock()
}

func (s *Session) unregister(id string) {
	s.mu.Lock()
	delete(s.waiters, id)
	s.mu.Unlock()
}

// Fetch downloads bytes [from, size) of the artifact with this digest in
// chunks of Options.ChunkSize, keeping up to Options.Window requests in
// flight, and hands each chunk to sink as it arrives (in any order; sink
// runs on the caller's goroutine). A chunk with no valid answer within
// ChunkTimeout is asked for again, up to ChunkAttempts times, after which
// Fetch returns ErrFetchTimeout. An error answer returns ErrRemote; a sink
// error or ctx's end returns at once.
func (s *Session) Fetch(ctx context.Context, digest string, size, from int64, sink func(offset int64, data []byte) error) error {
	type req struct {
		off, n   int64
		attempts int
		deadline time.Time
	}
	resp := make(chan chunk, s.opts.Window)
	pending := map[string]*req{}
	defer func() {
		for id := range pending {
			s.unregister(id)
		}
	}()
	issue := func(r *req) error {
		if r.attempts >= s.opts.ChunkAttempts {
			return fmt.Errorf("uplink.Fetch %s: no answer for bytes %d..%d after %d attempts of %s: %w",
				digest, r.off, r.off+r.n, r.attempts, s.opts.ChunkTimeout, ErrFetchTimeout)
		}
		r.attempts++
		r.deadline = time.Now().Add(s.opts.ChunkTimeout)
		id := fmt.Sprintf("%s-%d", s.idBase, s.seq.Add(1))
		s.register(id, resp)
		pending[id] = r
		b, _ := json.Marshal(wire.FetchRequest{ID: id, Digest: digest, Offset: r.off, Length: r.n})
		// Not waited for: a lost (or, while offline, unsent) request is
		// retried on its deadline.
		if s.ready.Load() {
			s.client.Publish(s.topic(wire.FetchReq), 1, false, b)
		}
		return nil
	}
	next := from
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for next < size || len(pending) > 0 {
		for len(pending) < s.opts.Window && next < size {
			n := min(int64(s.opts.ChunkSize), size-next)
			if err := issue(&req{off: next, n: n}); err != nil {
				return err
			}
			next += n
		}
		earliest := time.Now().Add(time.Hour)
		for _, r := range pending {
			if r.deadline.Before(earliest) {
				earliest = r.deadline
			}
		}
		timer.Reset(time.Until(earliest))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case c := <-resp:
			r := pending[c.h.ID]
			if r == nil {
				continue
			}
			if c.h.Error != "" {
				return fmt.Errorf("uplink.Fetch %s@%d: %s: %w", digest, r.off, c.h.Error, ErrRemote)
			}
			if c.h.Digest != digest || c.h.Offset != r.off || c.h.Total != size || int64(len(c.data)) != r.n {
				s.log.Warn("fetch answer does not match request; will retry",
					"digest", digest, "offset", r.off, "got_offset", c.h.Offset, "got_len", len(c.data), "total", c.h.Total)
				continue
			}
			delete(pending, c.h.ID)
			s.unregister(c.h.ID)
			if err := sink(r.off, c.data); err != nil {
				return fmt.Errorf("uplink.Fetch %s@%d: %w", digest, r.off, err)
			}
		case <-timer.C:
			now := time.Now()
			for id, r := range pending {
				if now.Before(r.deadline) {
					continue
				}
				delete(pending, id)
				s.unregister(id)
				s.log.Info("chunk timed out; asking again", "digest", digest, "offset", r.off, "attempt", r.attempts)
				if err := issue(r); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// ParseBroker reports whether a broker URL is usable, for config checks.
func ParseBroker(broker string) error {
	u, err := url.Parse(broker)
	if err != nil || u.Host == "" || strings.Contains(u.Host, "/") || u.Port() == "" || !knownScheme(u.Scheme) || strings.Trim(u.Path, "/") != "" {
		return fmt.Errorf("broker %q (want mqtts://host:port, or mqtt://host:port for a plain development listener): %w", broker, ErrOptions)
	}
	return nil
}

// TLSBroker reports whether a broker URL asks for TLS (mqtts://, ssl://,
// tls://).
func TLSBroker(broker string) bool {
	u, err := url.Parse(broker)
	return err == nil && (u.Scheme == "mqtts" || u.Scheme == "ssl" || u.Scheme == "tls")
}

func knownScheme(s string) bool {
	switch s {
	case "mqtt", "tcp", "mqtts", "ssl", "tls":
		return true
	}
	return false
}
