// Package broker runs the MQTT broker the control plane can embed for a
// one-command start (github.com/mochi-mqtt/server/v2 on a TCP listener).
// Production fleets use an external broker (Mosquitto, EMQX, ...) instead;
// the control plane talks to either through the same MQTT client.
package broker

import (
	"context"
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
	// Auth decides who may connect, publish and subscribe. Default: allow
	// every client (the walking skeleton has no device credentials yet).
	// Per-device ACLs (a device confined to starling/v1/dev/{id}/...) plug in
	// here as a mochi hook providing OnConnectAuthenticate and OnACLCheck.
	Auth mqtt.Hook
	// Logger receives the broker's own warnings and errors (its per-client
	// info lines are dropped); default: discard.
	Logger *slog.Logger
}

// Broker is an embedded MQTT broker. It keeps retained messages in memory
// only: whoever embeds it re-publishes what must survive a restart.
type Broker struct {
	srv  *mqtt.Server
	tcp  *listeners.TCP
	once sync.Once
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
	tcp := listeners.NewTCP(listeners.Config{ID: "tcp", Address: opts.Addr})
	if err := srv.AddListener(tcp); err != nil { // binds the socket
		return nil, fmt.Errorf("broker: listen on %s: %w", opts.Addr, err)
	}
	if err := srv.Serve(); err != nil {
		srv.Close()
		return nil, fmt.Errorf("broker: serve on %s: %w", opts.Addr, err)
	}
	return &Broker{srv: srv, tcp: tcp}, nil
}

// Addr returns the actual "host:port" the broker listens on.
func (b *Broker) Addr() string { return b.tcp.Address() }

// URL returns "mqtt://host:port" for clients.
func (b *Broker) URL() string { return "mqtt://" + b.Addr() }

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
