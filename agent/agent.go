// Package agent is the composition root of starling-agent: it wires the
// cache, the local API server, the MQTT uplink and the reconciler together
// and owns their goroutines. On start it serves the cached active models
// before the uplink even connects, so a device keeps answering through any
// control-plane outage.
package agent

import (
	"context"
	"fmt"
	"github.com/starling-edge/starling/shared/version"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/starling-edge/starling/agent/cache"
	"github.com/starling-edge/starling/agent/enroll"
	"github.com/starling-edge/starling/agent/reconcile"
	"github.com/starling-edge/starling/agent/serve"
	"github.com/starling-edge/starling/agent/tufclient"
	"github.com/starling-edge/starling/agent/uplink"
	"github.com/starling-edge/starling/shared/trust/tuf"
	"github.com/starling-edge/starling/shared/wire"
)

// Version is the agent's version: the build's, set at link time in
// shared/version (see the Makefile's LDFLAGS).
var Version = version.Version

// Options configure an Agent. Broker, DataDir and TrustRoot (or
// Verifier) are required, and DeviceID or Identity.
type Options struct {
	// DeviceID is the device's id; default Identity's. One that
	// disagrees with Identity is refused.
	DeviceID string
	// Identity is the device's fleet identity (agent/enroll), required
	// for an mqtts:// broker: the MQTT session and the HTTPS fetchers
	// present its certificate and trust only the fleet CA.
	Identity *enroll.Identity
	// Broker is the MQTT broker URL: mqtts://host:port (with Identity),
	// or mqtt://host:port for a development listener.
	Broker string
	// DataDir holds the cache file (cache.db); created 0700 if missing.
	DataDir string
	// Socket is the local API's unix socket; default DataDir/agent.sock.
	Socket string
	// SocketMode is the socket's permission; default 0660.
	SocketMode os.FileMode
	// TCP is an optional loopback listen address for the local API.
	TCP string
	// TrustRoot is the operator's TUF root.json, the device's trust
	// anchor until the cache holds a newer root. Required unless Verifier
	// is set.
	TrustRoot []byte
	// MetadataURL, when set, reads TUF metadata over HTTP from this
	// control plane URL (over HTTPS with Identity: the device API); by
	// default it is read over MQTT.
	MetadataURL string
	// ArtifactURL, when set, downloads artifacts with range requests from
	// this device API URL (https, needs Identity); by default they come
	// in chunks over MQTT.
	ArtifactURL string
	// Verifier replaces the TUF verifier built from TrustRoot (tests).
	Verifier reconcile.Verifier
	// Uplink tuning; DeviceID, Broker, OnDesired and Logger are set by
	// the agent. Zero values take the uplink's defaults.
	Uplink uplink.Options
	// Serving configures the local API's gRPC listeners, socket group and
	// per-model serving (batching, queues, allow lists, routes); zero
	// values take the serve package's defaults.
	Serving Serving
	// MaxBodyBytes caps a local API request; default 8 MiB.
	MaxBodyBytes int64
	// CacheBytes bounds unused cached artifacts; 0 keeps everything.
	CacheBytes int64
	// EnginePreference orders engines per format; default ["gotflite"].
	EnginePreference []string
	// OnServing is called once the local API listens, with the socket
	// path and the TCP address ("" without one).
	OnServing func(socket, tcp string)
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Agent is one running device agent.
type Agent struct {
	opts     Options
	log      *slog.Logger
	cache    *cache.Cache
	registry *serve.Registry
	server   *serve.Server
	session  *uplink.Session
	rec      *reconcile.Reconciler
}

// New checks opts and opens the cache. Nothing listens or connects until
// Run; Run closes what New opened.
func New(opts Options) (*Agent, error) {
	if id := opts.Identity; id != nil {
		if opts.DeviceID != "" && opts.DeviceID != id.DeviceID {
			return nil, fmt.Errorf("agent.New: device id %q disagrees with the device certificate, which is for %q (the id comes from the certificate; drop --device-id or fix it): %w", opts.DeviceID, id.DeviceID, ErrConfig)
		}
		opts.DeviceID = id.DeviceID
	}
	if opts.ArtifactURL != "" && opts.Identity == nil {
		return nil, fmt.Errorf("agent.New: artifact URL %s needs the device identity: %w", opts.ArtifactURL, ErrConfig)
	}
	if !wire.ValidDeviceID(opts.DeviceID) {
		return nil, fmt.Errorf("agent.New: device id %q: %w", opts.DeviceID, ErrConfig)
	}
	if opts.DataDir == "" {
		return nil, fmt.Errorf("agent.New: data directory is empty: %w", ErrConfig)
	}
	if opts.Verifier == nil && len(opts.TrustRoot) == 0 {
		return nil, fmt.Errorf("agent.New: no trust root (the operator's root.json): %w", ErrConfig)
	}
	if opts.Socket == "" {
		opts.Socket = filepath.Join(opts.DataDir, "agent.sock")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if err := os.MkdirAll(opts.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("agent.New: data directory: %w", err)
	}
	a := &Agent{opts: opts, log: opts.Logger, registry: serve.NewRegistry()}
	var err error
	a.server, err = serve.New(serve.Options{
		Socket: opts.Socket, SocketMode: opts.SocketMode, TCP: opts.TCP,
		GRPCSocket: opts.Serving.GRPCSocket, GRPCTCP: opts.Serving.GRPCTCP, SocketGroup: opts.Serving.SocketGroup,
		Models:       opts.Serving.Models,
		MaxBodyBytes: opts.MaxBodyBytes, Version: Version, Registry: a.registry, Logger: opts.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("agent.New: %w", err)
	}
	uo := opts.Uplink
	uo.DeviceID, uo.Broker, uo.Logger = opts.DeviceID, opts.Broker, opts.Logger
	if opts.Identity != nil {
		uo.TLSConfig = opts.Identity.TLSConfig()
	}
	uo.OnDesired = func(ds wire.DesiredState) { a.rec.Submit(ds) }
	if a.session, err = uplink.New(uo); err != nil {
		return nil, fmt.Errorf("agent.New: %w", err)
	}
	if a.cache, err = cache.Open(cache.Options{Path: filepath.Join(opts.DataDir, "cache.db")}); err != nil {
		return nil, fmt.Errorf("agent.New: %w", err)
	}
	verifier := opts.Verifier
	if verifier == nil {
		var fetcher tuf.Fetcher = a.session
		if opts.MetadataURL != "" {
			hf := &tufclient.HTTPFetcher{Base: opts.MetadataURL}
			if opts.Identity != nil {
				hf.Client = opts.Identity.HTTPClient(30 * time.Second)
			}
			fetcher = hf
		}
		if verifier, err = tufclient.New(tufclient.Options{Root: opts.TrustRoot, Store: a.cache, Fetcher: fetcher, AgentVersion: Version}); err != nil {
			a.cache.Close()
			return nil, fmt.Errorf("agent.New: %w", err)
		}
	}
	var artifacts reconcile.Fetcher = a.session
	if opts.ArtifactURL != "" {
		artifacts = &uplink.HTTPFetcher{Base: opts.ArtifactURL, Client: opts.Identity.HTTPClient(0), ChunkSize: opts.Uplink.ChunkSize}
	}
	a.rec, err = reconcile.New(reconcile.Options{
		DeviceID: opts.DeviceID, AgentVersion: Version,
		Cache: a.cache, Verifier: verifier, Fetcher: artifacts, Reporter: a.session,
		Registry: a.registry, EnginePreference: opts.EnginePreference, CacheBytes: opts.CacheBytes,
		Logger: opts.Logger,
	})
	if err != nil {
		a.cache.Close()
		return nil, fmt.Errorf("agent.New: %w", err)
	}
	return a, nil
}

// Run serves cached models, then follows the control plane, until ctx
// ends; then it stops every part and closes the socket, the MQTT session
// and the cache. It returns nil on a clean stop.
func (a *Agent) Run(ctx context.Context) (err error) {
	defer func() {
		a.registry.Close()
		if cerr := a.cache.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("agent: close cache: %w", cerr)
		}
	}()
	if err := a.rec.Restore(ctx); err != nil {
		return err
	}
	if err := a.server.Listen(); err != nil {
		return err
	}
	if a.opts.OnServing != nil {
		a.opts.OnServing(a.opts.Socket, a.server.TCPAddr())
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 3)
	for _, part := range []struct {
		name string
		run  func(context.Context) error
	}{
		{"serve", a.server.Serve},
		{"uplink", a.session.Run},
		{"reconcile", a.rec.Run},
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := part.run(ctx); err != nil {
				errc <- fmt.Errorf("agent: %s: %w", part.name, err)
				cancel()
			}
		}()
	}
	a.rec.Report(ctx) // held by the uplink until it connects
	<-ctx.Done()
	start := time.Now()
	wg.Wait()
	a.log.Info("agent stopped", "device", a.opts.DeviceID, "shutdown", time.Since(start).Round(time.Millisecond))
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}
