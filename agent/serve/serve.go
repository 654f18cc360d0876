// Package serve is the agent's local inference API: the KServe Open
// Inference Protocol v2 over HTTP/REST with JSON tensors, on a unix socket
// (and optionally a loopback TCP address). It serves whatever the Registry
// holds; the reconciler swaps models in and out of it.
//
// Readiness rule (GET /v2/health/ready): 200 when at least one model is
// served and no model load is in progress, 503 otherwise. A model's own
// readiness (GET /v2/models/{name}/ready) is 200 while it is served.
//
// Errors are JSON {"error": "..."}: 400 for a request that does not fit the
// model (the message names the input and what the model expects), 404 for
// an unknown model or version, 405 for a wrong method, 413 for a body over
// Options.MaxBodyBytes, 503 while not ready. No request can stop the
// server from answering the next one.
package serve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/starling-edge/starling/agent/runtime"
	"github.com/starling-edge/starling/shared/tensor"
)

// Options configure a Server. Socket and Registry are required.
type Options struct {
	// Socket is the unix socket path.
	Socket string
	// SocketMode is the socket file's permission; default 0660.
	SocketMode os.FileMode
	// TCP is an optional extra listen address; it must be loopback
	// (127.0.0.1:port, [::1]:port or localhost:port).
	TCP string
	// MaxBodyBytes caps a request body; default 8 MiB.
	MaxBodyBytes int64
	// Version is reported by GET /v2.
	Version string
	// Registry holds the served models.
	Registry *Registry
	// ShutdownTimeout bounds the wait for in-flight requests on stop;
	// default 5s.
	ShutdownTimeout time.Duration
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Server is the local API server.
type Server struct {
	opts      Options
	log       *slog.Logger
	unix, tcp net.Listener
}

// New checks opts; nothing listens until Listen.
func New(opts Options) (*Server, error) {
	if opts.Socket == "" {
		return nil, fmt.Errorf("serve.New: socket path is empty: %w", ErrOptions)
	}
	if opts.Registry == nil {
		return nil, fmt.Errorf("serve.New: no registry: %w", ErrOptions)
	}
	if opts.TCP != "" {
		if err := CheckLoopback(opts.TCP); err != nil {
			return nil, fmt.Errorf("serve.New: %w", err)
		}
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
	return &Server{opts: opts, log: opts.Logger.With("component", "serve")}, nil
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

// Listen opens the socket (replacing a stale socket file left by a crash,
// refusing if another process answers on it) and the TCP address.
func (s *Server) Listen() error {
	path := s.opts.Socket
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return fmt.Errorf("serve: %s exists and is not a socket; not replacing it: %w", path, ErrSocketInUse)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return fmt.Errorf("serve: %s: another process is serving on it: %w", path, ErrSocketInUse)
		}
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("serve: remove stale socket %s: %w", path, err)
		}
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("serve: listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, s.opts.SocketMode); err != nil {
		l.Close()
		return fmt.Errorf("serve: chmod %s: %w", path, err)
	}
	s.unix = l
	if s.opts.TCP != "" {
		t, err := net.Listen("tcp", s.opts.TCP)
		if err != nil {
			l.Close()
			return fmt.Errorf("serve: listen on %s: %w", s.opts.TCP, err)
		}
		s.tcp = t
	}
	return nil
}

// TCPAddr returns the TCP listener's address, or "" without one.
func (s *Server) TCPAddr() string {
	if s.tcp == nil {
		return ""
	}
	return s.tcp.Addr().String()
}

// Serve answers requests until ctx ends, then drains in-flight requests
// (up to ShutdownTimeout) and removes the socket file. Listen must have
// succeeded. It returns nil when ctx ends.
func (s *Server) Serve(ctx context.Context) error {
	if s.unix == nil {
		return fmt.Errorf("serve: Serve before Listen: %w", ErrOptions)
	}
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	ls := []net.Listener{s.unix}
	if s.tcp != nil {
		ls = append(ls, s.tcp)
	}
	errc := make(chan error, len(ls))
	var wg sync.WaitGroup
	for _, l := range ls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("serve %s: %w", l.Addr(), err)
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
	if serr := srv.Shutdown(sctx); serr != nil {
		srv.Close()
	}
	wg.Wait()
	if rerr := os.Remove(s.opts.Socket); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
		s.log.Warn("remove socket", "path", s.opts.Socket, "err", rerr)
	}
	return err
}

// Handler returns the API's HTTP handler.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	get := func(h http.HandlerFunc) http.HandlerFunc { return method(http.MethodGet, h) }
	mux.HandleFunc("/v2/health/live", get(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]bool{"live": true})
	}))
	mux.HandleFunc("/v2/health/ready", get(s.ready))
	mux.HandleFunc("/v2", get(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"name": "starling", "version": s.opts.Version, "extensions": []string{}})
	}))
	mux.HandleFunc("/v2/models/{name}", get(s.metadata))
	mux.HandleFunc("/v2/models/{name}/versions/{version}", get(s.metadata))
	mux.HandleFunc("/v2/models/{name}/ready", get(s.modelReady))
	mux.HandleFunc("/v2/models/{name}/versions/{version}/ready", get(s.modelReady))
	mux.HandleFunc("/v2/models/{name}/infer", method(http.MethodPost, s.infer))
	mux.HandleFunc("/v2/models/{name}/versions/{version}/infer", method(http.MethodPost, s.infer))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint %s %s", r.Method, r.URL.Path))
	})
	return mux
}

func method(m string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != m && !(m == http.MethodGet && r.Method == http.MethodHead) {
			w.Header().Set("Allow", m)
			writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s %s: method not allowed, use %s", r.Method, r.URL.Path, m))
			return
		}
		h(w, r)
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"error":"encoding response failed"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	if !s.opts.Registry.Ready() {
		writeError(w, http.StatusServiceUnavailable, "not ready: no model is served yet, or a model is loading")
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"ready": true})
}

// acquire finds the requested model (and version, if the path names one),
// answering 404 itself when there is none.
func (s *Server) acquire(w http.ResponseWriter, r *http.Request) (*Served, bool) {
	name, version := r.PathValue("name"), r.PathValue("version")
	m, ok := s.opts.Registry.Acquire(name)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("model %q is not served here (served: %v)", name, s.opts.Registry.Names()))
		return nil, false
	}
	if version != "" && version != m.Version {
		m.Release()
		writeError(w, http.StatusNotFound, fmt.Sprintf("model %q version %q is not served here (serving version %q)", name, version, m.Version))
		return nil, false
	}
	return m, true
}

type tensorMeta struct {
	Name     string       `json:"name"`
	Datatype tensor.DType `json:"datatype"`
	Shape    []int64      `json:"shape"`
}

func specsMeta(specs []runtime.TensorSpec) []tensorMeta {
	out := make([]tensorMeta, len(specs))
	for i, sp := range specs {
		out[i] = tensorMeta{Name: specName(sp, i), Datatype: sp.DType, Shape: sp.Shape}
	}
	return out
}

// specName names unnamed signature entries by position.
func specName(sp runtime.TensorSpec, i int) string {
	if sp.Name != "" {
		return sp.Name
	}
	return fmt.Sprintf("%d", i)
}

func (s *Server) metadata(w http.ResponseWriter, r *http.Request) {
	m, ok := s.acquire(w, r)
	if !ok {
		return
	}
	defer m.Release()
	sig := m.Model.Signature()
	writeJSON(w, http.StatusOK, map[string]any{
		"name":     m.Name,
		"versions": []string{m.Version},
		"platform": m.Platform,
		"inputs":   specsMeta(sig.Inputs),
		"outputs":  specsMeta(sig.Outputs),
	})
}

func (s *Server) modelReady(w http.ResponseWriter, r *http.Request) {
	m, ok := s.acquire(w, r)
	if !ok {
		return
	}
	defer m.Release()
	writeJSON(w, http.StatusOK, map[string]any{"name": m.Name, "version": m.Version, "ready": true})
}

type inferInput struct {
	Name     string          `json:"name"`
	Shape    []int64         `json:"shape"`
	Datatype tensor.DType    `json:"datatype"`
	Data     json.RawMessage `json:"data"`
}

type inferRequest struct {
	ID      string       `json:"id,omitempty"`
	Inputs  []inferInput `json:"inputs"`
	Outputs []struct {
		Name string `json:"name"`
	} `json:"outputs,omitempty"`
}

type inferOutput struct {
	Name     string       `json:"name"`
	Shape    []int64      `json:"shape"`
	Datatype tensor.DType `json:"datatype"`
	Data     any          `json:"data"`
}

type inferResponse struct {
	ModelName    string        `json:"model_name"`
	ModelVersion string        `json:"model_version"`
	ID           string        `json:"id,omitempty"`
	Outputs      []inferOutput `json:"outputs"`
}

func (s *Server) infer(w http.ResponseWriter, r *http.Request) {
	m, ok := s.acquire(w, r)
	if !ok {
		return
	}
	defer m.Release()
	var req inferRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, s.opts.MaxBodyBytes))
	if err := dec.Decode(&req); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body over %d bytes", tooBig.Limit))
			return
		}
		writeError(w, http.StatusBadRequest, fmt.Sprintf("invalid JSON request body: %v", err))
		return
	}
	sig := m.Model.Signature()
	inputs, err := bindInputs(req.Inputs, sig.Inputs)
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("model %s:%s: %v", m.Name, m.Version, err))
		return
	}
	want := map[string]bool{}
	for _, o := range req.Outputs {
		if !hasSpec(sig.Outputs, o.Name) {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("model %s:%s has no output %q; it has %s", m.Name, m.Version, o.Name, describe(sig.Outputs)))
			return
		}
		want[o.Name] = true
	}
	outs, err := m.Model.Run(r.Context(), inputs)
	switch {
	case errors.Is(err, runtime.ErrInput):
		writeError(w, http.StatusBadRequest, fmt.Sprintf("model %s:%s: %v", m.Name, m.Version, err))
		return
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("inference cancelled: %v", err))
		return
	case err != nil:
		s.log.Error("inference failed", "model", m.Name, "version", m.Version, "err", err)
		writeError(w, http.StatusInternalServerError, fmt.Sprintf("model %s:%s: inference failed: %v", m.Name, m.Version, err))
		return
	}
	resp := inferResponse{ModelName: m.Name, ModelVersion: m.Version, ID: req.ID, Outputs: []inferOutput{}}
	for i := range outs {
		o := &outs[i]
		name := o.Name
		if name == "" && i < len(sig.Outputs) {
			name = specName(sig.Outputs[i], i)
		}
		if len(want) > 0 && !want[name] {
			continue
		}
		data, err := encodeData(o)
		if err != nil {
			writeError(w, http.StatusInternalServerError, fmt.Sprintf("model %s:%s: output %q: %v", m.Name, m.Version, name, err))
			return
		}
		resp.Outputs = append(resp.Outputs, inferOutput{Name: name, Shape: o.Shape, Datatype: o.DType, Data: data})
	}
	writeJSON(w, http.StatusOK, resp)
}

func hasSpec(specs []runtime.TensorSpec, name string) bool {
	for i, sp := range specs {
		if specName(sp, i) == name {
			return true
		}
	}
	return false
}

func describe(specs []runtime.TensorSpec) string {
	parts := make([]string, len(specs))
	for i, sp := range specs {
		parts[i] = fmt.Sprintf("%q %s %v", specName(sp, i), sp.DType, sp.Shape)
	}
	return strings.Join(parts, ", ")
}

// bindInputs checks the request's inputs against the signature and orders
// them as the model expects.
func bindInputs(in []inferInput, specs []runtime.TensorSpec) ([]tensor.Tensor, error) {
	byName := map[string]*inferInput{}
	for i := range in {
		x := &in[i]
		if !hasSpec(specs, x.Name) {
			return nil, fmt.Errorf("unknown input %q; the model expects %s: %w", x.Name, describe(specs), ErrBadRequest)
		}
		if byName[x.Name] != nil {
			return nil, fmt.Errorf("input %q given twice: %w", x.Name, ErrBadRequest)
		}
		byName[x.Name] = x
	}
	out := make([]tensor.Tensor, len(specs))
	for i, sp := range specs {
		name := specName(sp, i)
		x := byName[name]
		if x == nil {
			return nil, fmt.Errorf("missing input %q; the model expects %s: %w", name, describe(specs), ErrBadRequest)
		}
		if x.Datatype != sp.DType {
			return nil, fmt.Errorf("input %q has datatype %q, the model expects %s: %w", name, x.Datatype, sp.DType, ErrBadRequest)
		}
		if !jsonSupported(x.Datatype) {
			return nil, fmt.Errorf("input %q: datatype %s cannot be sent as JSON: %w", name, x.Datatype, ErrBadRequest)
		}
		if !shapeFits(x.Shape, sp.Shape) {
			return nil, fmt.Errorf("input %q has shape %v, the model expects %v: %w", name, x.Shape, sp.Shape, ErrBadRequest)
		}
		data, n, err := decodeData(x.Data, x.Datatype)
		if err != nil {
			return nil, fmt.Errorf("input %q: %v: %w", name, err, ErrBadRequest)
		}
		if want := tensor.NumElements(x.Shape); int64(n) != want {
			return nil, fmt.Errorf("input %q: shape %v needs %d elements, data has %d: %w", name, x.Shape, want, n, ErrBadRequest)
		}
		out[i] = tensor.Tensor{Name: sp.Name, DType: x.Datatype, Shape: x.Shape, Data: data}
	}
	return out, nil
}

// shapeFits reports whether a concrete shape matches a signature shape in
// which -1 is any size.
func shapeFits(got, want []int64) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] < 0 || (want[i] >= 0 && got[i] != want[i]) {
			return false
		}
	}
	return true
}
