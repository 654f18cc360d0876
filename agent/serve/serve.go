// Package serve is the agent's local inference API. It speaks the KServe
// Open Inference Protocol v2 over HTTP/REST (JSON and the binary tensor
// data extension) and over gRPC (inference.GRPCInferenceService), plus the
// TensorFlow Serving REST :predict API for old clients, on a unix socket
// and a sibling gRPC socket (each optionally also on a loopback TCP
// address). It serves whatever the Registry holds; the reconciler swaps
// models in and out of it.
//
// Per model it bounds concurrency and the queue (429 / RESOURCE_EXHAUSTED
// with a retry hint past it), drops requests whose deadline passes while
// queued, batches concurrent requests where the model's batch dimension
// allows it, routes by version, label (stable, canary) and A/B split,
// copies live traffic to a shadow version and compares the answers, and
// checks a per-model allow list against the caller the kernel names
// (SO_PEERCRED). Prometheus metrics are at GET /metrics.
//
// Readiness rule (GET /v2/health/ready): 200 when at least one model is
// served and no model load is in progress, 503 otherwise. A model's own
// readiness (GET /v2/models/{name}/ready) is 200 while it is served.
//
// Errors are JSON {"error": "..."} (gRPC: a status with the same message):
// 400 / INVALID_ARGUMENT for a request that does not fit the model (the
// message names the input and what the model expects), 403 /
// PERMISSION_DENIED for a caller not on the allow list, 404 / NOT_FOUND
// for an unknown model, version or label, 405 for a wrong method, 413 for
// a body over Options.MaxBodyBytes, 429 / RESOURCE_EXHAUSTED for a full
// queue, 503 / UNAVAILABLE while not ready, 504 / DEADLINE_EXCEEDED for a
// request dropped at its deadline. No request can stop the server from
// answering the next one.
package serve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	pb "github.com/starling-edge/starling/agent/serve/inferencepb"
)

// Options configure a Server. Socket and Registry are required.
type Options struct {
	// Socket is the REST API's unix socket path.
	Socket string
	// GRPCSocket is the gRPC API's unix socket path; default Socket with
	// its ".sock" suffix replaced by "-grpc.sock" (agent.sock ->
	// agent-grpc.sock).
	GRPCSocket string
	// SocketMode is the sockets' file permission; default 0660.
	SocketMode os.FileMode
	// SocketGroup, when set, is the group (name or numeric gid) that owns
	// the sockets, so that its members may connect under mode 0660.
	SocketGroup string
	// TCP is an optional extra REST listen address; it must be loopback
	// (127.0.0.1:port, [::1]:port or localhost:port).
	TCP string
	// GRPCTCP is an optional extra gRPC listen address, loopback only.
	GRPCTCP string
	// MaxBodyBytes caps a request body (and a gRPC message); default 8 MiB.
	MaxBodyBytes int64
	// Version is reported by GET /v2 and ServerMetadata.
	Version string
	// Registry holds the served models.
	Registry *Registry
	// Models configure serving per model name (batching, queue, allow
	// list, routes); a name without an entry gets the zero ModelOptions.
	Models map[string]ModelOptions
	// ShutdownTimeout bounds the wait for in-flight requests on stop;
	// default 5s.
	ShutdownTimeout time.Duration
	// Logger; default slog.Default().
	Logger *slog.Logger
	// DisableFastPath turns off the REST fast path (see fastpath.go), so
	// that net/http answers every request; default false: POST .../infer
	// requests of the common form are answered without net/http, with
	// the same answers, at a fraction of the per-request cost.
	DisableFastPath bool
}

// Server is the local API server.
type Server struct {
	opts Options
	log  *slog.Logger
	gid  int // -1: keep the sockets' group

	unix, tcp, gunix, gtcp net.Listener

	fastAnswered atomic.Int64 // requests the fast path answered (tests read it)
}

// New checks opts and applies Models to the registry; nothing listens
// until Listen.
func New(opts Options) (*Server, error) {
	if opts.Socket == "" {
		return nil, fmt.Errorf("serve.New: socket path is empty: %w", ErrOptions)
	}
	if opts.Registry == nil {
		return nil, fmt.Errorf("serve.New: no registry: %w", ErrOptions)
	}
	for _, a := range []string{opts.TCP, opts.GRPCTCP} {
		if a != "" {
			if err := CheckLoopback(a); err != nil {
				return nil, fmt.Errorf("serve.New: %w", err)
			}
		}
	}
	if opts.GRPCSocket == "" {
		opts.GRPCSocket = DefaultGRPCSocket(opts.Socket)
	}
	if opts.GRPCSocket == opts.Socket {
		return nil, fmt.Errorf("serve.New: the gRPC socket and the REST socket are both %s: %w", opts.Socket, ErrOptions)
	}
	if opts.SocketMode == 0 {
		opts.SocketMode = 0o660
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 8 << 20
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Server{opts: opts, log: opts.Logger.With("component", "serve"), gid: -1}
	if opts.SocketGroup != "" {
		gid, err := LookupGroup(opts.SocketGroup)
		if err != nil {
			return nil, fmt.Errorf("serve.New: %w", err)
		}
		s.gid = gid
	}
	for name, mo := range opts.Models {
		if err := opts.Registry.Configure(name, mo); err != nil {
			return nil, fmt.Errorf("serve.New: %w", err)
		}
	}
	opts.Registry.SetLogger(opts.Logger)
	return s, nil
}

// DefaultGRPCSocket is the gRPC socket beside a REST socket path.
func DefaultGRPCSocket(socket string) string {
	return strings.TrimSuffix(socket, ".sock") + "-grpc.sock"
}

// LookupGroup resolves a group name or numeric gid.
func LookupGroup(g string) (int, error) {
	if n, err := strconv.Atoi(g); err == nil && n >= 0 {
		return n, nil
	}
	gr, err := user.LookupGroup(g)
	if err != nil {
		return 0, fmt.Errorf("socket group %q: %v: %w", g, err, ErrOptions)
	}
	n, err := strconv.Atoi(gr.Gid)
	if err != nil {
		return 0, fmt.Errorf("socket group %q has gid %q: %w", g, gr.Gid, ErrOptions)
	}
	return n, nil
}

// CheckLoopback accepts only host:port addresses on the loopback interface.
func CheckLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("tcp address %q: %v: %w", addr, err, ErrOptions)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("tcp address %q is not loopback (use 127.0.0.1 or [::1]): %w", addr, ErrOptions)
	}
	return nil
}

// listenUnix opens a unix socket at path (replacing a stale socket file
// left by a crash, refusing if another process answers on it), with the
// configured mode and group.
func (s *Server) listenUnix(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("serve: %s exists and is not a socket; not replacing it: %w", path, ErrSocketInUse)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("serve: %s: another process is serving on it: %w", path, ErrSocketInUse)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("serve: remove stale socket %s: %w", path, err)
		}
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("serve: listen on %s: %w", path, err)
	}
	if s.gid >= 0 {
		if err := os.Chown(path, -1, s.gid); err != nil {
			l.Close()
			return nil, fmt.Errorf("serve: give %s to group %s: %w", path, s.opts.SocketGroup, err)
		}
	}
	if err := os.Chmod(path, s.opts.SocketMode); err != nil {
		l.Close()
		return nil, fmt.Errorf("serve: chmod %s: %w", path, err)
	}
	return credListener{l}, nil
}

// Listen opens the REST and gRPC sockets and TCP addresses.
func (s *Server) Listen() (err error) {
	var opened []net.Listener
	defer func() {
		if err != nil {
			for _, l := range opened {
				l.Close()
			}
			s.unix, s.gunix, s.tcp, s.gtcp = nil, nil, nil, nil
		}
	}()
	if s.unix, err = s.listenUnix(s.opts.Socket); err != nil {
		return err
	}
	opened = append(opened, s.unix)
	if s.gunix, err = s.listenUnix(s.opts.GRPCSocket); err != nil {
		return err
	}
	opened = append(opened, s.gunix)
	if s.opts.TCP != "" {
		if s.tcp, err = net.Listen("tcp", s.opts.TCP); err != nil {
			return fmt.Errorf("serve: listen on %s: %w", s.opts.TCP, err)
		}
		opened = append(opened, s.tcp)
	}
	if s.opts.GRPCTCP != "" {
		if s.gtcp, err = net.Listen("tcp", s.opts.GRPCTCP); err != nil {
			return fmt.Errorf("serve: listen on %s: %w", s.opts.GRPCTCP, err)
		}
	}
	return nil
}

// TCPAddr returns the REST TCP listener's address, or "" without one.
func (s *Server) TCPAddr() string {
	if s.tcp == nil {
		return ""
	}
	return s.tcp.Addr().String()
}

// GRPCTCPAddr returns the gRPC TCP listener's address, or "" without one.
func (s *Server) GRPCTCPAddr() string {
	if s.gtcp == nil {
		return ""
	}
	return s.gtcp.Addr().String()
}

// GRPCSocket returns the gRPC unix socket path.
func (s *Server) GRPCSocket() string { return s.opts.GRPCSocket }

// Serve answers requests until ctx ends, then drains in-flight requests
// (up to ShutdownTimeout) and removes the socket files. Listen must have
// succeeded. It returns nil when ctx ends.
func (s *Server) Serve(ctx context.Context) error {
	if s.unix == nil {
		return fmt.Errorf("serve: Serve before Listen: %w", ErrOptions)
	}
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ConnContext:       connContext,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	gs := grpc.NewServer(grpc.MaxRecvMsgSize(int(s.opts.MaxBodyBytes)), grpc.MaxSendMsgSize(int(s.opts.MaxBodyBytes)))
	pb.RegisterGRPCInferenceServiceServer(gs, &grpcService{s: s})

	type part struct {
		l     net.Listener
		serve func(net.Listener) error
	}
	restServe := srv.Serve
	var fast *fastServer
	if !s.opts.DisableFastPath {
		fast = newFastServer(s, s.unix.Addr())
		restServe = fast.serve
	}
	parts := []part{{s.unix, restServe}, {s.gunix, gs.Serve}}
	if s.tcp != nil {
		parts = append(parts, part{s.tcp, restServe})
	}
	if fast != nil {
		// net/http serves the connections the fast path hands over.
		parts = append(parts, part{fast.handoff, srv.Serve})
	}
	if s.gtcp != nil {
		parts = append(parts, part{s.gtcp, gs.Serve})
	}
	errc := make(chan error, len(parts))
	var wg sync.WaitGroup
	for _, p := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.serve(p.l); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, grpc.ErrServerStopped) {
				errc <- fmt.Errorf("serve %s: %w", p.l.Addr(), err)
			}
		}()
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.opts.ShutdownTimeout)
	defer cancel()
	gdone := make(chan struct{})
	go func() { gs.GracefulStop(); close(gdone) }()
	fdone := make(chan struct{})
	go func() {
		defer close(fdone)
		if fast != nil {
			fast.shutdown(sctx)
		}
	}()
	if serr := srv.Shutdown(sctx); serr != nil {
		srv.Close()
	}
	<-fdone
	select {
	case <-gdone:
	case <-sctx.Done():
		gs.Stop()
		<-gdone
	}
	wg.Wait()
	for _, p := range []string{s.opts.Socket, s.opts.GRPCSocket} {
		if rerr := os.Remove(p); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			s.log.Warn("remove socket", "path", p, "err", rerr)
		}
	}
	return err
}

func durationUs(us int64) time.Duration { return time.Duration(us) * time.Microsecond }
