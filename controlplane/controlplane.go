// Package controlplane is the composition root of starling-control: it
// wires the store, the embedded broker (unless an external one is given),
// the MQTT link to the fleet and the REST API into one Server.
package controlplane

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/starling-edge/starling/controlplane/api"
	"github.com/starling-edge/starling/controlplane/broker"
	"github.com/starling-edge/starling/controlplane/fleet"
	"github.com/starling-edge/starling/controlplane/link"
	"github.com/starling-edge/starling/controlplane/store"
	"github.com/starling-edge/starling/controlplane/tufrepo"
	"github.com/starling-edge/starling/shared/wire"
)

// Default listen addresses.
const (
	DefaultHTTPAddr = "127.0.0.1:8080"
	DefaultMQTTAddr = "127.0.0.1:1883"
)

// Options configures a Server.
type Options struct {
	DataDir   string // required: store file and artifacts live here
	HTTPAddr  string // REST API listen address; default "127.0.0.1:8080"; "127.0.0.1:0" picks a free port
	MQTTAddr  string // embedded broker TLS listen address (device certificates required); default "127.0.0.1:1883"; ":0"-style free port allowed
	BrokerURL string // "mqtts://host:port" (or mqtt:// without TLS) of an external broker (e.g. Mosquitto); when set, no embedded broker runs
	// DeviceAddr is the device API's TLS listen address (enrollment and
	// device calls); default: none. starling-control listens on
	// 127.0.0.1:8443 unless told otherwise.
	DeviceAddr string
	// InsecureMQTTAddr adds a plain-TCP listener to the embedded broker
	// with NO authentication and NO ACLs, for development only; default:
	// none. See InsecureBrokerURL.
	InsecureMQTTAddr string
	// MosquittoDir is the directory of a configuration made by `starling-control
	// mosquitto-config`: its CRL and ACL are kept current and the broker
	// (pid_file) gets SIGHUP after each revocation. Default: none.
	MosquittoDir string
	// FetchHook, if set, is called before each artifact chunk is answered. Return false to drop the request
	// (no answer). It may sleep to delay. For tests (fault injection).
	FetchHook func(deviceID string, req wire.FetchRequest) bool
	// MetadataHook, if set, runs before each TUF metadata answer over
	// MQTT; when it returns ok its data is served instead. For tests (a
	// compromised control plane).
	MetadataHook func(deviceID, name string) (data []byte, ok bool)
	// TimestampExpiry and SnapshotExpiry are the lifetimes of the online
	// TUF metadata; defaults tuf.DefaultTimestampExpiry (24h) and
	// tuf.DefaultSnapshotExpiry (7 days). Each is re-signed at half-life.
	TimestampExpiry, SnapshotExpiry time.Duration
	Logger                          *slog.Logger // default: discard
}

// Validate checks the options after defaults; errors name the field and
// wrap ErrOptions.
func (o Options) Validate() error {
	if o.DataDir == "" {
		return fmt.Errorf("%w: DataDir is required (the directory for the store file and artifacts)", ErrOptions)
	}
	if o.HTTPAddr != "" {
		if _, _, err := net.SplitHostPort(o.HTTPAddr); err != nil {
			return fmt.Errorf("%w: HTTPAddr %q: want host:port: %v", ErrOptions, o.HTTPAddr, err)
		}
	}
	if o.MQTTAddr != "" {
		if _, _, err := net.SplitHostPort(o.MQTTAddr); err != nil {
			return fmt.Errorf("%w: MQTTAddr %q: want host:port: %v", ErrOptions, o.MQTTAddr, err)
		}
	}
	for name, addr := range map[string]string{"DeviceAddr": o.DeviceAddr, "InsecureMQTTAddr": o.InsecureMQTTAddr} {
		if addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return fmt.Errorf("%w: %s %q: want host:port: %v", ErrOptions, name, addr, err)
		}
	}
	if o.BrokerURL != "" {
		if _, err := link.PahoServer(o.BrokerURL); err != nil {
			return fmt.Errorf("%w: BrokerURL: %v", ErrOptions, err)
		}
	}
	return nil
}

// Server is a control plane: store, optional embedded broker, MQTT link and
// REST API.
type Server struct {
	opts      Options
	log       *slog.Logger
	store     *store.Bolt
	artifacts *store.Artifacts
	repo      *tufrepo.Repo
	fleet     *fleet.Fleet
	repoStop  context.CancelFunc
	repoDone  chan struct{}

	mu        sync.Mutex
	started   bool
	closed    bool
	broker    *broker.Broker
	link      *link.Link
	httpSrv   *http.Server
	httpLn    net.Listener
	brokerURL string
	serveDone chan struct{}

	deviceSrv  *http.Server
	deviceLn   net.Listener
	deviceDone chan struct{}
}

// New checks opts, applies defaults and opens the store in DataDir
// (control.db and artifacts/). Start brings up the network side.
func New(opts Options) (*Server, error) {
	if opts.HTTPAddr == "" {
		opts.HTTPAddr = DefaultHTTPAddr
	}
	if opts.MQTTAddr == "" {
		opts.MQTTAddr = DefaultMQTTAddr
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("controlplane: data dir %s: %w", opts.DataDir, err)
	}
	st, err := store.OpenBolt(filepath.Join(opts.DataDir, "control.db"), store.BoltOptions{})
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	arts, err := store.OpenArtifacts(filepath.Join(opts.DataDir, "artifacts"))
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	repo, err := tufrepo.Open(tufrepo.Options{Dir: filepath.Join(opts.DataDir, "tuf"), TimestampExpiry: opts.TimestampExpiry,
		SnapshotExpiry: opts.SnapshotExpiry, Logger: opts.Logger.With("component", "tuf")})
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	fl, err := openFleet(opts)
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	return &Server{opts: opts, log: opts.Logger, store: st, artifacts: arts, repo: repo, fleet: fl}, nil
}

// clientID is stable for a data directory, so a restarted control plane
// resumes its persistent MQTT session, and distinct between directories.
func clientID(dataDir string) string {
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		abs = dataDir
	}
	sum := sha256.Sum256([]byte(abs))
	return "starling-control-" + hex.EncodeToString(sum[:6])
}

// Start starts the embedded broker (unless BrokerURL is set), connects and
// subscribes to the fleet's topics, and listens for the REST API. When it
// returns without error everything is listening and subscribed. On error
// the caller still calls Close.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.closed {
		return ErrStarted
	}
	s.started = true

	s.brokerURL = s.opts.BrokerURL
	embedded := s.brokerURL == ""
	if embedded {
		if err := s.startEmbeddedBrokerLocked(); err != nil {
			return fmt.Errorf("controlplane: %w", err)
		}
		s.brokerURL = s.broker.URL()
	}
	if err := s.watchMosquitto(); err != nil {
		return fmt.Errorf("controlplane: %w", err)
	}
	linkTLS, err := s.linkTLS()
	if err != nil {
		return fmt.Errorf("controlplane: %w", err)
	}

	l, err := link.New(link.Options{
		BrokerURL: s.brokerURL,
		TLSConfig: linkTLS,
		ClientID:  clientID(s.opts.DataDir),
		Store:     s.store,
		Artifacts: s.artifacts,
		FetchHook: s.opts.FetchHook,
		Metadata: func(name string) ([]byte, error) {
			b, err := s.repo.File(name)
			if errors.Is(err, tufrepo.ErrNotFound) {
				return nil, fmt.Errorf("%w: %v", link.ErrMetadataNotFound, err)
			}
			return b, err
		},
		MetadataHook: s.opts.MetadataHook,
		Logger:       s.log.With("component", "link"),
	})
	if err != nil {
		return fmt.Errorf("controlplane: %w", err)
	}
	s.link = l
	if err := l.Start(ctx); err != nil {
		return fmt.Errorf("controlplane: %w", err)
	}
	if embedded {
		// A fresh embedded broker has no retained messages: give every
		// device its desired state back. An external broker keeps them.
		if err := l.RepublishDesired(ctx, true); err != nil {
			s.log.Warn("re-publishing desired states to the embedded broker", "err", err)
		}
	}

	handler, err := api.New(api.Options{
		Store:        s.store,
		Artifacts:    s.artifacts,
		Desired:      l,
		Repo:         s.repo,
		Fleet:        s.fleet,
		NotDelivered: func(err error) bool { return errors.Is(err, link.ErrPublish) },
		Logger:       s.log.With("component", "api"),
	})
	if err != nil {
		return fmt.Errorf("controlplane: %w", err)
	}
	ln, err := net.Listen("tcp", s.opts.HTTPAddr)
	if err != nil {
		return fmt.Errorf("controlplane: listen for the API on %s: %w", s.opts.HTTPAddr, err)
	}
	s.httpLn = ln
	if err := s.startDeviceAPILocked(handler.DeviceHandler()); err != nil {
		return fmt.Errorf("controlplane: %w", err)
	}
	s.httpSrv = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	rctx, rstop := context.WithCancel(context.Background())
	s.repoStop, s.repoDone = rstop, make(chan struct{})
	go func() {
		defer close(s.repoDone)
		s.repo.Run(rctx)
	}()
	s.serveDone = make(chan struct{})
	go func() {
		defer close(s.serveDone)
		if err := s.httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("api server stopped", "err", err)
		}
	}()
	s.log.Info("control plane started", "api", s.httpAddrLocked(), "broker", s.brokerURL, "embedded_broker", embedded)
	return nil
}

// HTTPAddr returns the actual "host:port" of the REST API ("" before Start).
func (s *Server) HTTPAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.httpAddrLocked()
}

// httpAddrLocked is HTTPAddr for callers holding s.mu.
func (s *Server) httpAddrLocked() string {
	if s.httpLn == nil {
		return ""
	}
	return s.httpLn.Addr().String()
}

// BrokerURL returns the "mqtt://host:port" agents should connect to: the
// embedded broker's or the external one ("" before Start).
func (s *Server) BrokerURL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.brokerURL
}

// Close stops the API, the MQTT link and the embedded broker, then closes
// the store. It is safe to call more than once and after a failed Start.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var errs []error
	if s.httpSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := s.httpSrv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("api shutdown: %w", err))
			s.httpSrv.Close()
		}
		cancel()
		<-s.serveDone
	}
	if s.deviceSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := s.deviceSrv.Shutdown(ctx); err != nil {
			s.deviceSrv.Close()
		}
		cancel()
		<-s.deviceDone
	}
	if s.repoStop != nil {
		s.repoStop()
		<-s.repoDone
	}
	if s.link != nil {
		if err := s.link.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if s.broker != nil {
		if err := s.broker.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := s.store.Close(); err != nil {
		errs = append(errs, fmt.Errorf("store close: %w", err))
	}
	if err := s.fleet.Close(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("controlplane: close: %w", errors.Join(errs...))
	}
	return nil
}
