package serve

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/starling-edge/starling/agent/runtime"
	_ "github.com/starling-edge/starling/agent/runtime/gotflite"
)

// startServer serves reg on a unix socket in a temp dir and returns a
// client for it.
func startServer(t *testing.T, reg *Registry, opts Options) (*http.Client, string) {
	t.Helper()
	startServerWith(t, reg, &opts)
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", opts.Socket)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}, opts.Socket
}

// startServerWith starts a server with opts (Socket, Registry, Version and
// Logger filled in) until the test ends.
func startServerWith(t *testing.T, reg *Registry, opts *Options) *Server {
	t.Helper()
	// Unix socket paths are limited to ~108 bytes; t.TempDir can be long.
	dir, err := os.MkdirTemp("", "serve")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	opts.Socket = filepath.Join(dir, "agent.sock")
	opts.Registry = reg
	opts.Version = "test"
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := New(*opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		for _, p := range []string{opts.Socket, s.GRPCSocket()} {
			if _, err := os.Stat(p); !os.IsNotExist(err) {
				t.Errorf("socket %s not removed on exit: %v", p, err)
			}
		}
	})
	return s
}

// loadDemo serves the real demo model (gotflite) as demo:version.
func loadDemo(t *testing.T, reg *Registry, version string) {
	t.Helper()
	b, err := os.ReadFile("../../testdata/models/demo/model.tflite")
	if err != nil {
		t.Fatal(err)
	}
	e, err := runtime.Lookup("gotflite")
	if err != nil {
		t.Fatal(err)
	}
	m, err := e.Load(b, runtime.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	reg.Swap("demo", version, e.Format(), m)
}

// demoCase is the first case the official interpreter recorded.
func demoCase(t *testing.T) (in, out []float32) {
	t.Helper()
	b, err := os.ReadFile("../../testdata/models/demo/reference.json")
	if err != nil {
		t.Fatal(err)
	}
	var ref struct {
		Cases []struct {
			Inputs  []struct{ Data []float32 } `json:"inputs"`
			Outputs []struct{ Data []float32 } `json:"outputs"`
		} `json:"cases"`
	}
	if err := json.Unmarshal(b, &ref); err != nil || len(ref.Cases) == 0 {
		t.Fatalf("reference.json: %v", err)
	}
	return ref.Cases[0].Inputs[0].Data, ref.Cases[0].Outputs[0].Data
}

func do(t *testing.T, c *http.Client, method, path, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, "http://agent"+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("%s %s: body %q is not JSON: %v", method, path, b, err)
	}
	return resp.StatusCode, out
}

const goodInfer = `{"id":"r1","inputs":[{"name":"input","shape":[1,8],"datatype":"FP32","data":[1,2,3,4,5,6,7,8]}]}`

func TestHealthAndMetadata(t *testing.T) {
	reg := NewRegistry()
	c, sock := startServer(t, reg, Options{})
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket mode: %v, %v; want 0660", fi.Mode(), err)
	}
	if code, _ := do(t, c, "GET", "/v2/health/live", ""); code != 200 {
		t.Errorf("live: %d", code)
	}
	if code, body := do(t, c, "GET", "/v2/health/ready", ""); code != 503 || body["error"] == nil {
		t.Errorf("ready with no model: %d %v, want 503 with error", code, body)
	}
	loadDemo(t, reg, "1")
	if code, _ := do(t, c, "GET", "/v2/health/ready", ""); code != 200 {
		t.Errorf("ready with a model: %d", code)
	}
	end := reg.BeginLoad()
	if code, _ := do(t, c, "GET", "/v2/health/ready", ""); code != 503 {
		t.Errorf("ready while loading: %d, want 503", code)
	}
	end()
	code, body := do(t, c, "GET", "/v2", "")
	if code != 200 || body["name"] != "starling" || body["version"] != "test" {
		t.Errorf("server metadata: %d %v", code, body)
	}
	code, body = do(t, c, "GET", "/v2/models/demo", "")
	in, _ := body["inputs"].([]any)
	if code != 200 || body["platform"] != "tflite" || len(in) != 1 {
		t.Fatalf("model metadata: %d %v", code, body)
	}
	if first := in[0].(map[string]any); first["name"] != "input" || first["datatype"] != "FP32" {
		t.Errorf("input metadata %v", first)
	}
	if code, _ := do(t, c, "GET", "/v2/models/demo/ready", ""); code != 200 {
		t.Errorf("model ready: %d", code)
	}
	if code, _ := do(t, c, "GET", "/v2/models/demo/versions/1/ready", ""); code != 200 {
		t.Errorf("model version ready: %d", code)
	}
}

func TestInferAndBadRequests(t *testing.T) {
	reg := NewRegistry()
	loadDemo(t, reg, "1")
	c, _ := startServer(t, reg, Options{MaxBodyBytes: 4096})

	tests := []struct {
		name, method, path, body string
		code                     int
		msg                      string // substring of the error
	}{
		{"wrong shape", "POST", "/v2/models/demo/infer",
			`{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}`, 400, "expects [1 8]"},
		{"wrong datatype", "POST", "/v2/models/demo/infer",
			`{"inputs":[{"name":"input","shape":[1,8],"datatype":"INT32","data":[1,2,3,4,5,6,7,8]}]}`, 400, "expects FP32"},
		{"data count", "POST", "/v2/models/demo/infer",
			`{"inputs":[{"name":"input","shape":[1,8],"datatype":"FP32","data":[1,2,3]}]}`, 400, "the shape needs 8"},
		{"string data", "POST", "/v2/models/demo/infer",
			`{"inputs":[{"name":"input","shape":[1,8],"datatype":"FP32","data":["a",2,3,4,5,6,7,8]}]}`, 400, "only numbers and booleans"},
		{"unknown input", "POST", "/v2/models/demo/infer",
			`{"inputs":[{"name":"x","shape":[1,8],"datatype":"FP32","data":[1,2,3,4,5,6,7,8]}]}`, 400, `unknown input "x"`},
		{"missing input", "POST", "/v2/models/demo/infer", `{"inputs":[]}`, 400, `no inputs`},
		{"unknown output", "POST", "/v2/models/demo/infer",
			`{"inputs":[{"name":"input","shape":[1,8],"datatype":"FP32","data":[1,2,3,4,5,6,7,8]}],"outputs":[{"name":"nope"}]}`, 400, `no output "nope"`},
		{"invalid JSON", "POST", "/v2/models/demo/infer", `{"inputs":[`, 400, "invalid JSON"},
		{"unknown model", "POST", "/v2/models/other/infer", goodInfer, 404, `"other" is not served`},
		{"unknown version", "POST", "/v2/models/demo/versions/9/infer", goodInfer, 404, `no version or label "9"`},
		{"wrong method", "GET", "/v2/models/demo/infer", "", 405, "use POST"},
		{"body too large", "POST", "/v2/models/demo/infer", `{"id":"` + strings.Repeat("x", 5000) + `"}`, 413, "over the 4096-byte limit"},
		{"unknown path", "GET", "/v3", "", 404, "no such endpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := do(t, c, tt.method, tt.path, tt.body)
			msg, _ := body["error"].(string)
			if code != tt.code || !strings.Contains(msg, tt.msg) {
				t.Errorf("got %d %q, want %d containing %q", code, msg, tt.code, tt.msg)
			}
			// The server keeps answering good requests after a bad one.
			code, body = do(t, c, "POST", "/v2/models/demo/versions/1/infer", goodInfer)
			if code != 200 {
				t.Fatalf("good request after %s: %d %v", tt.name, code, body)
			}
		})
	}

	// Nested data is accepted, and the answer is the official
	// interpreter's.
	in, want := demoCase(t)
	nested, _ := json.Marshal([][]float32{in})
	code, body := do(t, c, "POST", "/v2/models/demo/infer",
		`{"id":"n","inputs":[{"name":"input","shape":[1,8],"datatype":"FP32","data":`+string(nested)+`}]}`)
	if code != 200 || body["id"] != "n" || body["model_version"] != "1" {
		t.Fatalf("nested infer: %d %v", code, body)
	}
	out := body["outputs"].([]any)[0].(map[string]any)
	got := out["data"].([]any)
	if out["name"] != "probabilities" || out["datatype"] != "FP32" || len(got) != len(want) {
		t.Fatalf("output %v, want probabilities FP32 [1,3]", out)
	}
	for i := range want {
		if d := got[i].(float64) - float64(want[i]); d > 1e-5 || d < -1e-5 {
			t.Errorf("probabilities[%d] = %v, reference %v", i, got[i], want[i])
		}
	}
}

func TestSwapDuringInference(t *testing.T) {
	reg := NewRegistry()
	loadDemo(t, reg, "1")
	c, _ := startServer(t, reg, Options{})
	var wg sync.WaitGroup
	errs := make(chan string, 64)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 25 {
				req, _ := http.NewRequest("POST", "http://agent/v2/models/demo/infer", strings.NewReader(goodInfer))
				resp, err := c.Do(req)
				if err != nil {
					errs <- err.Error()
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					errs <- resp.Status
				}
			}
		}()
	}
	for v := 2; v < 30; v++ {
		loadDemo(t, reg, fmt.Sprint(v))
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Errorf("request failed during swaps: %s", e)
	}
}

func TestListenRefusesLiveSocketAndLoopbackOnly(t *testing.T) {
	reg := NewRegistry()
	_, sock := startServer(t, reg, Options{})
	s, err := New(Options{Socket: sock, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err == nil || !strings.Contains(err.Error(), "another process") {
		t.Errorf("second Listen on a live socket: %v", err)
	}
	for _, addr := range []string{"0.0.0.0:1", "10.0.0.1:80", "example.com:80"} {
		if _, err := New(Options{Socket: sock, Registry: reg, TCP: addr}); err == nil {
			t.Errorf("TCP %s accepted; only loopback may be", addr)
		}
	}
}
