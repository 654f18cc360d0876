package serve

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/starling-edge/starling/agent/runtime"
	"github.com/starling-edge/starling/shared/tensor"
)

// Extensions lists the protocol extensions GET /v2 and ServerMetadata
// report.
var Extensions = []string{"binary_tensor_data", "model_version_labels", "tensorflow_serving_predict", "prometheus_metrics"}

// Response headers with the request's timing (microseconds) and the
// version that answered; the JSON body repeats them in "parameters".
const (
	HeaderQueueUs   = "Starling-Queue-Us"
	HeaderComputeUs = "Starling-Compute-Us"
	HeaderVersion   = "Starling-Model-Version"
	// HeaderTimeout bounds a request, as a Go duration ("250ms").
	HeaderTimeout = "Starling-Timeout"
	// HeaderRouteKey places a request in an A/B split (default: its id).
	HeaderRouteKey = "Starling-Route-Key"
	// headerInferLen is the binary tensor data extension's header.
	headerInferLen = "Inference-Header-Content-Length"
)

// Handler returns the API's HTTP handler.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	get := func(h http.HandlerFunc) http.HandlerFunc { return method(http.MethodGet, h) }
	post := func(h http.HandlerFunc) http.HandlerFunc { return method(http.MethodPost, h) }
	mux.HandleFunc("/v2/health/live", get(s.live))
	mux.HandleFunc("/v2/health/ready", get(s.ready))
	mux.HandleFunc("/v2", get(s.serverMeta))
	for _, sel := range []string{"", "/versions/{version}", "/labels/{label}"} {
		mux.HandleFunc("/v2/models/{name}"+sel, get(s.metadata))
		mux.HandleFunc("/v2/models/{name}"+sel+"/ready", get(s.modelReady))
		mux.HandleFunc("/v2/models/{name}"+sel+"/infer", post(s.inferHTTP))
	}
	mux.HandleFunc("/v1/models/", s.tfServing)
	mux.Handle("/metrics", promhttp.HandlerFor(s.opts.Registry.metrics.reg, promhttp.HandlerOpts{}))
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

// writeErr answers err with its status (and Retry-After for a full queue).
func writeErr(w http.ResponseWriter, err error) {
	code, _ := statusOf(err)
	var re *retryError
	if errors.As(err, &re) {
		w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds(re.after)))
		w.Header().Set("Starling-Retry-After-Ms", strconv.FormatInt(max(re.after.Milliseconds(), 1), 10))
	}
	writeError(w, code, err.Error())
}

func (s *Server) live(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]bool{"live": true})
}

func (s *Server) serverMeta(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"name": "starling", "version": s.opts.Version, "extensions": Extensions})
}

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	if !s.opts.Registry.Ready() {
		writeError(w, http.StatusServiceUnavailable, "not ready: no model is served yet, or a model is loading")
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"ready": true})
}

// lookup finds the model a metadata or readiness request names, after the
// allow list.
func (s *Server) lookup(caller Caller, name, version, label string) (*Served, error) {
	if err := checkAllowed(name, s.opts.Registry.options(name).Allow, caller); err != nil {
		return nil, err
	}
	m, shadow, err := s.opts.Registry.route(name, version, label, "")
	if shadow != nil {
		shadow.Release()
	}
	return m, err
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

type modelMeta struct {
	Name     string       `json:"name"`
	Versions []string     `json:"versions"`
	Platform string       `json:"platform"`
	Inputs   []tensorMeta `json:"inputs"`
	Outputs  []tensorMeta `json:"outputs"`
}

// metaOf is a model's metadata: every served version when the request
// named none, else the one it named.
func (s *Server) metaOf(m *Served, named bool) modelMeta {
	sig := m.Signature()
	versions := []string{m.Version}
	if !named {
		versions = s.opts.Registry.Versions(m.Name)
	}
	return modelMeta{Name: m.Name, Versions: versions, Platform: m.Platform, Inputs: specsMeta(sig.Inputs), Outputs: specsMeta(sig.Outputs)}
}

func (s *Server) metadata(w http.ResponseWriter, r *http.Request) {
	version, label := r.PathValue("version"), r.PathValue("label")
	m, err := s.lookup(callerFrom(r.Context()), r.PathValue("name"), version, label)
	if err != nil {
		writeErr(w, err)
		return
	}
	defer m.Release()
	writeJSON(w, http.StatusOK, s.metaOf(m, version != "" || label != ""))
}

func (s *Server) modelReady(w http.ResponseWriter, r *http.Request) {
	m, err := s.lookup(callerFrom(r.Context()), r.PathValue("name"), r.PathValue("version"), r.PathValue("label"))
	if err != nil {
		writeErr(w, err)
		return
	}
	defer m.Release()
	writeJSON(w, http.StatusOK, map[string]any{"name": m.Name, "version": m.Version, "ready": true})
}

// bufPool recycles request bodies and response buffers.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(b *[]byte) {
	if cap(*b) <= 4<<20 { // do not pin huge buffers
		*b = (*b)[:0]
		bufPool.Put(b)
	}
}

// readBody reads r's body (at most limit bytes) into buf.
func readBody(r *http.Request, buf *[]byte, limit int64) error {
	if r.ContentLength > limit {
		return fmt.Errorf("request body of %d bytes is over the %d-byte limit: %w", r.ContentLength, limit, ErrTooLarge)
	}
	b := (*buf)[:0]
	if r.ContentLength > 0 {
		if int64(cap(b)) < r.ContentLength {
			b = make([]byte, 0, r.ContentLength)
		}
		b = b[:r.ContentLength]
		if _, err := io.ReadFull(r.Body, b); err != nil {
			*buf = b[:0]
			return fmt.Errorf("reading request body: %v: %w", err, ErrBadRequest)
		}
		*buf = b
		return nil
	}
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Body.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if int64(len(b)) > limit {
			*buf = b[:0]
			return fmt.Errorf("request body is over the %d-byte limit: %w", limit, ErrTooLarge)
		}
		if err == io.EOF {
			*buf = b
			return nil
		}
		if err != nil {
			*buf = b[:0]
			return fmt.Errorf("reading request body: %v: %w", err, ErrBadRequest)
		}
	}
}

func (s *Server) inferHTTP(w http.ResponseWriter, r *http.Request) {
	buf := getBuf()
	defer putBuf(buf)
	if err := readBody(r, buf, s.opts.MaxBodyBytes); err != nil {
		writeErr(w, err)
		return
	}
	call := inferCall{
		name: r.PathValue("name"), version: r.PathValue("version"), label: r.PathValue("label"),
		headerLen: r.Header.Get(headerInferLen), timeout: r.Header.Get(HeaderTimeout), routeKey: r.Header.Get(HeaderRouteKey),
	}
	out := getBuf()
	defer putBuf(out)
	resp, jsonLen, err := s.inferREST(r.Context(), callerFrom(r.Context()), &call, *buf, out)
	if err != nil {
		writeErr(w, err)
		return
	}
	b := *out
	h := w.Header()
	h.Set(HeaderQueueUs, strconv.FormatInt(resp.queue.Microseconds(), 10))
	h.Set(HeaderComputeUs, strconv.FormatInt(resp.compute.Microseconds(), 10))
	h.Set(HeaderVersion, resp.version)
	if jsonLen < len(b) {
		h.Set(headerInferLen, strconv.Itoa(jsonLen))
		h.Set("Content-Type", "application/octet-stream")
	} else {
		h.Set("Content-Type", "application/json")
	}
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	w.Write(b)
}

// inferCall is what an OIP v2 REST inference request says outside its
// body: the path's model, version and label, and the raw values of the
// headers the API reads ("" when absent).
type inferCall struct {
	name, version, label string
	headerLen            string // Inference-Header-Content-Length
	timeout              string // Starling-Timeout
	routeKey             string // Starling-Route-Key
}

// inferREST answers one OIP v2 REST inference request, whichever HTTP
// path brought it (net/http or the fast path): it parses body, runs the
// request and encodes the answer into out (reset first). jsonLen is the
// JSON part's length; when it is below len(*out) the rest is binary
// output data. Every error wraps a sentinel (see statusOf).
func (s *Server) inferREST(ctx context.Context, caller Caller, c *inferCall, body []byte, out *[]byte) (resp *response, jsonLen int, err error) {
	hl := 0
	if h := c.headerLen; h != "" {
		n, err := strconv.Atoi(h)
		if err != nil || n < 0 {
			return nil, 0, fmt.Errorf("%s %q is not a byte count: %w", headerInferLen, h, ErrBadRequest)
		}
		hl = n
	}
	req, err := parseInferRequest(body, hl)
	if err != nil {
		return nil, 0, err
	}
	req.model, req.version, req.label = c.name, c.version, c.label
	if h := c.timeout; h != "" {
		d, err := time.ParseDuration(h)
		if err != nil || d <= 0 {
			return nil, 0, fmt.Errorf("%s %q is not a positive duration such as 250ms: %w", HeaderTimeout, h, ErrBadRequest)
		}
		req.timeout = d
	}
	key := c.routeKey
	if key == "" {
		key = req.id
	}
	resp, err = s.infer(ctx, req, caller, key)
	if err != nil {
		return nil, 0, err
	}
	b, jsonLen, err := appendInferResponse((*out)[:0], resp)
	*out = b
	if err != nil {
		return nil, 0, fmt.Errorf("model %s:%s: %v: %w", resp.model, resp.version, err, ErrInternal)
	}
	return resp, jsonLen, nil
}

// appendInferResponse writes the OIP v2 JSON response, followed by the
// binary data of outputs sent as binary; jsonLen is the JSON part's length.
func appendInferResponse(b []byte, resp *response) (_ []byte, jsonLen int, err error) {
	b = append(b, `{"model_name":`...)
	b = strconv.AppendQuote(b, resp.model)
	b = append(b, `,"model_version":`...)
	b = strconv.AppendQuote(b, resp.version)
	if resp.id != "" {
		b = append(b, `,"id":`...)
		b = strconv.AppendQuote(b, resp.id)
	}
	b = append(b, `,"parameters":{"queue_time_us":`...)
	b = strconv.AppendInt(b, resp.queue.Microseconds(), 10)
	b = append(b, `,"compute_time_us":`...)
	b = strconv.AppendInt(b, resp.compute.Microseconds(), 10)
	b = append(b, `,"batch_size":`...)
	b = strconv.AppendInt(b, int64(resp.batch), 10)
	b = append(b, `},"outputs":[`...)
	binBytes := 0
	for i, o := range resp.outputs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"name":`...)
		b = strconv.AppendQuote(b, o.t.Name)
		b = append(b, `,"datatype":"`...)
		b = append(b, o.t.DType...)
		b = append(b, `","shape":[`...)
		for k, d := range o.t.Shape {
			if k > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, d, 10)
		}
		b = append(b, ']')
		if o.binary {
			b = append(b, `,"parameters":{"binary_data_size":`...)
			b = strconv.AppendInt(b, int64(len(o.t.Data)), 10)
			b = append(b, `}}`...)
			binBytes += len(o.t.Data)
			continue
		}
		b = append(b, `,"data":`...)
		if b, err = appendJSONData(b, &o.t); err != nil {
			return b, 0, err
		}
		b = append(b, '}')
	}
	b = append(b, "]}"...)
	jsonLen = len(b)
	if binBytes > 0 {
		for _, o := range resp.outputs {
			if o.binary {
				b = append(b, o.t.Data...)
			}
		}
	}
	return b, jsonLen, nil
}
