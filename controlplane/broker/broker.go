// Package broker runs the MQTT broker the control plane can embed for a
// one-command start (github.com/mochi-mqtt/server/v2): a TLS listener that
// requires a fleet client certificate, with per-device ACLs enforced by
// FleetHook (a device only under starling/v1/dev/{its-id}/...), and
// optionally a plain-TCP listener without any authentication for
// development. Production fleets may use an external broker (Mosquitto,
// ...) configured with the same rules; the control plane talks to either
// through the same MQTT client.
package broker

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// Options configures an embedded broker.
type Options struct {
	// Addr is the TCP listen address; default "127.0.0.1:1883". A port of 0
	// picks a free one (see Broker.Addr).
	Addr string
	// TLSConfig, when set, makes the listener at Addr a TLS listener
	// (mqtts://). Set ClientAuth to tls.RequireAndVerifyClientCert and
	// ClientCAs to the fleet CA so that FleetHook can read identities.
	TLSConfig *tls.Config
	// InsecureAddr, when set, adds a plain-TCP listener there.
	// IMPORTANT: FleetHook lets every client of this listener connect,
	// publish and subscribe anywhere, without credentials. It exists for
	// development only and is off by default.
	InsecureAddr string
	// Auth decides who may connect, publish and subscribe. Default: allow
	// every client. The control plane sets a FleetHook: per-device ACLs
	// from client certificates.
	Auth mqtt.Hook
	// Logger receives the broker's own warnings and errors (its per-client
	// info lines are dropped); default: discard.
	Logger *slog.Logger
}

// Broker is an embedded MQTT broker. It keeps retained messages in memory
// only: whoever embeds it re-publishes what must survive a restart.
type Broker struct {
	srv      *mqtt.Server
	tcp      *listeners.TCP
	insecure *listeners.TCP
	tls      bool
	once     sync.Once
}

// hooks is the one place the broker's hook chain is built: authentication
// and ACLs first, then anything else (persistence, metrics) after them.
func hooks(opts Options) []mqtt.Hook {
	authHook := opts.Auth
	if authHook == nil {
		authHook = new(auth.AllowHook)
	}
	return []mqtt.Hook{authHook}
}

// Start binds the listener and serves clients until Close. The listener is
// accepting when Start returns.
func Start(opts Options) (*Broker, error) {
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:1883"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	quiet := slog.New(minLevel{opts.Logger.Handler(), slog.LevelWarn})
	srv := mqtt.New(&mqtt.Options{InlineClient: false, Logger: quiet})
	for _, h := range hooks(opts) {
		if err := srv.AddHook(h, nil); err != nil {
			return nil, fmt.Errorf("broker: add hook %s: %w", h.ID(), err)
		}
	}
	id := ListenerTCP
	if opts.TLSConfig != nil {
		id = ListenerTLS
	}
	tcp := listeners.NewTCP(listeners.Config{ID: id, Address: opts.Addr, TLSConfig: opts.TLSConfig})
	if err := srv.AddListener(tcp); err != nil { // binds the socket
		srv.Close()
		return nil, fmt.Errorf("broker: listen on %s: %w", opts.Addr, err)
	}
	b := &Broker{srv: srv, tcp: tcp, tls: opts.TLSConfig != nil}
	if opts.InsecureAddr != "" {
		b.insecure = listeners.NewTCP(listeners.Config{ID: ListenerInsecure, Address: opts.InsecureAddr})
		if err := srv.AddListener(b.insecure); err != nil {
			srv.Close()
			return nil, fmt.Errorf("broker: insecure listener on %s: %w", opts.InsecureAddr, err)
		}
	}
	if h, ok := opts.Auth.(*FleetHook); ok {
		h.mu.Lock()
		h.srv = srv
		h.mu.Unlock()
	}
	if err := srv.Serve(); err != nil {
		srv.Close()
		return nil, fmt.Errorf("broker: serve on %s: %w", opts.Addr, err)
	}
	return b, nil
}

// Listener ids, as FleetHook sees them.
const (
	ListenerTCP      = "tcp"      // Addr without TLSConfig
	ListenerTLS      = "tls"      // Addr with TLSConfig
	ListenerInsecure = "insecure" // InsecureAddr
)

// Addr returns the actual "host:port" the broker listens on.
func (b *Broker) Addr() string { return b.tcp.Address() }

// URL returns "mqtts://host:port" for a TLS listener, else
// "mqtt://host:port".
func (b *Broker) URL() string {
	if b.tls {
		return "mqtts://" + b.Addr()
	}
	return "mqtt://" + b.Addr()
}

// InsecureURL returns "mqtt://host:port" of the plain development
// listener, or "" without one.
func (b *Broker) InsecureURL() string {
	if b.insecure == nil {
		return ""
	}
	return "mqtt://" + b.insecure.Address()
}

// Close disconnects every client and stops listening. It is safe to call
// more than once.
func (b *Broker) Close() error {
	var err error
	b.once.Do(func() { err = b.srv.Close() })
	return err
}

// minLevel drops records below a level; mochi logs every connection at info.
type minLevel struct {
	slog.Handler
	min slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(a []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(a), h.min}
}
func (h minLevel) WithGroup(n string) slog.Handler { return minLevel{h.Handler.WithGroup(n), h.min} }
