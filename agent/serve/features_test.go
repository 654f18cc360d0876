package serve

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/starling-edge/starling/agent/runtime"
	"github.com/starling-edge/starling/shared/tensor"
)

// rowModel is a model whose behaviour a test controls: input "x" FP32
// [B,4] -> output "y" FP32 [B,2] with y[r] = {scale*sum(x[r]), 1}. B is -1
// (dynamic) or a static size. While hold is set every run waits for a
// value from gate; warmFail fails the first run (the warm-up).
type rowModel struct {
	b        int64
	scale    float32
	gate     chan struct{}
	hold     atomic.Bool
	warmFail bool
	runs     atomic.Int64
	rows     atomic.Int64 // rows of the last run
	closed   atomic.Bool
}

var _ runtime.Model = (*rowModel)(nil)

func (m *rowModel) Signature() runtime.Signature {
	return runtime.Signature{
		Inputs:  []runtime.TensorSpec{{Name: "x", DType: tensor.Fp32, Shape: []int64{m.b, 4}}},
		Outputs: []runtime.TensorSpec{{Name: "y", DType: tensor.Fp32, Shape: []int64{m.b, 2}}},
	}
}

func (m *rowModel) Run(ctx context.Context, in []tensor.Tensor) ([]tensor.Tensor, error) {
	if m.closed.Load() {
		return nil, runtime.ErrClosed
	}
	n := m.runs.Add(1)
	if m.warmFail && n == 1 {
		return nil, fmt.Errorf("warm-up fault")
	}
	if m.hold.Load() {
		select {
		case <-m.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	x, err := in[0].Float32s()
	if err != nil || len(in[0].Shape) != 2 || in[0].Shape[1] != 4 || (m.b > 0 && in[0].Shape[0] != m.b) {
		return nil, fmt.Errorf("input %v: %w", in[0].Shape, runtime.ErrInput)
	}
	rows := int(in[0].Shape[0])
	m.rows.Store(int64(rows))
	y := make([]float32, 2*rows)
	for r := range rows {
		var s float32
		for _, v := range x[4*r : 4*r+4] {
			s += v
		}
		y[2*r], y[2*r+1] = m.scale*s, 1
	}
	return []tensor.Tensor{tensor.FromFloat32("y", []int64{int64(rows), 2}, y)}, nil
}

func (m *rowModel) Close() error { m.closed.Store(true); return nil }

// post sends body with extra headers and returns status, headers, body.
func post(t testing.TB, c *http.Client, path string, body []byte, hdr map[string]string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest("POST", "http://agent"+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

func rowReq(id string, rows ...[]float32) []byte {
	var flat []float32
	for _, r := range rows {
		flat = append(flat, r...)
	}
	b, _ := json.Marshal(map[string]any{"id": id, "inputs": []any{map[string]any{
		"name": "x", "datatype": "FP32", "shape": []int{len(rows), 4}, "data": flat}}})
	return b
}

type inferBody struct {
	ModelVersion string         `json:"model_version"`
	Parameters   map[string]any `json:"parameters"`
	Outputs      []struct {
		Name  string    `json:"name"`
		Shape []int64   `json:"shape"`
		Data  []float32 `json:"data"`
	} `json:"outputs"`
	Error string `json:"error"`
}

func decode(t testing.TB, b []byte) inferBody {
	t.Helper()
	var ib inferBody
	if err := json.Unmarshal(b, &ib); err != nil {
		t.Fatalf("body %q: %v", b, err)
	}
	return ib
}

func mustLoad(t testing.TB, reg *Registry, name, version string, m runtime.Model, activate bool) {
	t.Helper()
	if err := reg.Load(context.Background(), name, version, "test", m, activate); err != nil {
		t.Fatal(err)
	}
}

func TestBinaryTensorExtension(t *testing.T) {
	reg := NewRegistry()
	loadDemo(t, reg, "1")
	c, _ := startServer(t, reg, Options{})
	in, want := demoCase(t)
	header := `{"inputs":[{"name":"input","shape":[1,8],"datatype":"FP32","parameters":{"binary_data_size":32}}],"outputs":[{"name":"probabilities","parameters":{"binary_data":true}}]}`
	body := []byte(header)
	for _, v := range in {
		body = binary.LittleEndian.AppendUint32(body, math.Float32bits(v))
	}
	code, h, b := post(t, c, "/v2/models/demo/infer", body, map[string]string{headerInferLen: strconv.Itoa(len(header))})
	if code != 200 {
		t.Fatalf("binary infer: %d %s", code, b)
	}
	hl, err := strconv.Atoi(h.Get(headerInferLen))
	if err != nil || hl > len(b) || h.Get("Content-Type") != "application/octet-stream" {
		t.Fatalf("response %s %q, content type %q", headerInferLen, h.Get(headerInferLen), h.Get("Content-Type"))
	}
	var js struct {
		Outputs []struct {
			Name       string         `json:"name"`
			Parameters map[string]int `json:"parameters"`
		} `json:"outputs"`
	}
	if err := json.Unmarshal(b[:hl], &js); err != nil || len(js.Outputs) != 1 || js.Outputs[0].Parameters["binary_data_size"] != 12 {
		t.Fatalf("response header %s: %v", b[:hl], err)
	}
	raw := b[hl:]
	if len(raw) != 12 {
		t.Fatalf("binary output %d bytes, want 12", len(raw))
	}
	for i := range want {
		got := math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		if math.Abs(float64(got-want[i])) > 1e-5 {
			t.Errorf("probabilities[%d] = %v, reference %v", i, got, want[i])
		}
	}
	if h.Get(HeaderComputeUs) == "" || h.Get(HeaderQueueUs) == "" || h.Get(HeaderVersion) != "1" {
		t.Errorf("timing headers missing: %v", h)
	}

	bad := []struct {
		name, header string
		data         int
		hl           string
		msg          string
	}{
		{"size past end", `{"inputs":[{"name":"input","shape":[1,8],"datatype":"FP32","parameters":{"binary_data_size":64}}]}`, 32, "", "remain"},
		{"size vs shape", `{"inputs":[{"name":"input","shape":[1,8],"datatype":"FP32","parameters":{"binary_data_size":16}}]}`, 16, "", "needs 32 bytes"},
		{"trailing bytes", `{"inputs":[{"name":"input","shape":[1,8],"datatype":"FP32","parameters":{"binary_data_size":32}}]}`, 40, "", "after the last input"},
		{"header length", `{"inputs":[]}`, 0, "999", "past the end"},
		{"header length text", `{"inputs":[]}`, 0, "x", "not a byte count"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			body := append([]byte(tt.header), make([]byte, tt.data)...)
			hl := tt.hl
			if hl == "" {
				hl = strconv.Itoa(len(tt.header))
			}
			code, _, b := post(t, c, "/v2/models/demo/infer", body, map[string]string{headerInferLen: hl})
			if code != 400 || !strings.Contains(decode(t, b).Error, tt.msg) {
				t.Errorf("got %d %s, want 400 containing %q", code, b, tt.msg)
			}
		})
	}
}

func TestTFServingPredict(t *testing.T) {
	reg := NewRegistry()
	loadDemo(t, reg, "1")
	c, _ := startServer(t, reg, Options{})
	in, want := demoCase(t)
	row, _ := json.Marshal([][]float32{in})
	check := func(t *testing.T, got []float32) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("got %v, want %v", got, want)
		}
		for i := range want {
			if math.Abs(float64(got[i]-want[i])) > 1e-5 {
				t.Errorf("[%d] = %v, reference %v", i, got[i], want[i])
			}
		}
	}
	for _, path := range []string{"/v1/models/demo:predict", "/v1/models/demo/versions/1:predict", "/v1/models/demo/labels/stable:predict"} {
		code, _, b := post(t, c, path, []byte(`{"instances":`+string(row)+`}`), nil)
		var rows struct{ Predictions [][]float32 }
		if code != 200 || json.Unmarshal(b, &rows) != nil || len(rows.Predictions) != 1 {
			t.Fatalf("%s instances: %d %s", path, code, b)
		}
		check(t, rows.Predictions[0])
	}
	code, _, b := post(t, c, "/v1/models/demo:predict", []byte(`{"inputs":{"input":`+string(row)+`}}`), nil)
	var cols struct{ Outputs [][]float32 }
	if code != 200 || json.Unmarshal(b, &cols) != nil || len(cols.Outputs) != 1 {
		t.Fatalf("inputs: %d %s", code, b)
	}
	check(t, cols.Outputs[0])
	for _, tt := range []struct {
		path, body string
		code       int
		msg        string
	}{
		{"/v1/models/demo:predict", `{"instances":[[1,2]]}`, 400, "expects [1 8]"},
		{"/v1/models/demo:predict", `{"instances":[[1,2],[3]]}`, 400, "ragged"},
		{"/v1/models/demo:predict", `{}`, 400, "exactly one of"},
		{"/v1/models/demo:predict", `{"inputs":{"nope":[1]}}`, 400, `unknown input "nope"`},
		{"/v1/models/demo/labels/canary:predict", `{"instances":` + string(row) + `}`, 404, `no label "canary"`},
		{"/v1/models/demo:classify", `{}`, 404, "no such endpoint"},
	} {
		code, _, b := post(t, c, tt.path, []byte(tt.body), nil)
		if code != tt.code || !strings.Contains(decode(t, b).Error, tt.msg) {
			t.Errorf("%s %s: got %d %s, want %d containing %q", tt.path, tt.body, code, b, tt.code, tt.msg)
		}
	}
	if code, body := do(t, c, "GET", "/v1/models/demo", ""); code != 200 || body["model_version_status"] == nil {
		t.Errorf("status: %d %v", code, body)
	}
}

func TestAccessControl(t *testing.T) {
	uid, gid := uint32(os.Getuid()), uint32(os.Getgid())
	reg := NewRegistry()
	c, _ := startServer(t, reg, Options{TCP: "127.0.0.1:0", Models: map[string]ModelOptions{
		"mine":   {Allow: Allow{UIDs: []uint32{uid}}},
		"group":  {Allow: Allow{GIDs: []uint32{gid}}},
		"theirs": {Allow: Allow{UIDs: []uint32{uid + 1}, GIDs: []uint32{gid + 1}}},
		"open":   {},
	}})
	for _, n := range []string{"mine", "group", "theirs", "open"} {
		mustLoad(t, reg, n, "1", &rowModel{b: 1, scale: 1}, true)
	}
	for _, tt := range []struct {
		model string
		code  int
	}{{"mine", 200}, {"group", 200}, {"open", 200}, {"theirs", 403}} {
		code, _, b := post(t, c, "/v2/models/"+tt.model+"/infer", rowReq("", []float32{1, 2, 3, 4}), nil)
		if code != tt.code {
			t.Errorf("%s: %d %s, want %d", tt.model, code, b, tt.code)
		}
		if tt.code == 403 && !strings.Contains(string(b), "not on its allow list") {
			t.Errorf("%s: refusal %s does not say why", tt.model, b)
		}
		if code, _ := do(t, c, "GET", "/v2/models/"+tt.model, ""); code != tt.code {
			t.Errorf("%s metadata: %d, want %d", tt.model, code, tt.code)
		}
	}
}

func TestQueueBoundAndDeadline(t *testing.T) {
	reg := NewRegistry()
	c, _ := startServer(t, reg, Options{Models: map[string]ModelOptions{"m": {Concurrency: 1, QueueSize: 1}}})
	m := &rowModel{b: 1, scale: 1, gate: make(chan struct{})}
	mustLoad(t, reg, "m", "1", m, true)
	m.hold.Store(true)
	body := rowReq("", []float32{1, 1, 1, 1})
	var wg sync.WaitGroup
	codes := make(chan int, 2)
	wg.Add(1)
	go func() { // runs, held at the gate
		defer wg.Done()
		code, _, _ := post(t, c, "/v2/models/m/infer", body, nil)
		codes <- code
	}()
	waitFor(t, "first request running", func() bool { return m.runs.Load() == 2 })
	// The second waits in the queue until its deadline: dropped, not run.
	code, _, b := post(t, c, "/v2/models/m/infer", body, map[string]string{HeaderTimeout: "30ms"})
	if code != 504 || !strings.Contains(string(b), "not run") {
		t.Errorf("queued past deadline: %d %s, want 504", code, b)
	}
	wg.Add(1)
	go func() { // waits in the queue (the one slot)
		defer wg.Done()
		code, _, _ := post(t, c, "/v2/models/m/infer", body, nil)
		codes <- code
	}()
	waitFor(t, "second request queued", func() bool { return reg.entry("m", false).snap.Load().versions["1"].exec.waiting.Load() == 1 })
	code, h, b := post(t, c, "/v2/models/m/infer", body, nil)
	if code != 429 || h.Get("Retry-After") == "" || h.Get("Starling-Retry-After-Ms") == "" {
		t.Errorf("over the queue bound: %d %v %s, want 429 with Retry-After", code, h, b)
	}
	m.gate <- struct{}{}
	m.gate <- struct{}{}
	wg.Wait()
	close(codes)
	for code := range codes {
		if code != 200 {
			t.Errorf("held request: %d", code)
		}
	}
	if got := m.runs.Load(); got != 3 { // warm-up + the two answered
		t.Errorf("model ran %d times, want 3 (the expired request must not run)", got)
	}
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func TestBatching(t *testing.T) {
	reg := NewRegistry()
	c, _ := startServer(t, reg, Options{Models: map[string]ModelOptions{
		"dyn":    {Concurrency: 1, Batching: &Batching{MaxBatchSize: 4, MaxQueueDelay: time.Millisecond}},
		"static": {Concurrency: 1, Batching: &Batching{MaxQueueDelay: time.Millisecond}},
	}})
	dyn := &rowModel{b: -1, scale: 1, gate: make(chan struct{})}
	mustLoad(t, reg, "dyn", "1", dyn, true)
	dyn.hold.Store(true)
	static := &rowModel{b: 4, scale: 2}
	mustLoad(t, reg, "static", "1", static, true)

	// One request holds the batcher; four more queue meanwhile and then
	// run as one batch of 4 (the max, so no waiting for the delay).
	var wg sync.WaitGroup
	results := make(chan inferBody, 5)
	send := func(i int) {
		defer wg.Done()
		v := float32(i)
		code, _, b := post(t, c, "/v2/models/dyn/infer", rowReq("", []float32{v, v, v, v}), nil)
		if code != 200 {
			t.Errorf("request %d: %d %s", i, code, b)
			return
		}
		ib := decode(t, b)
		if len(ib.Outputs) != 1 || len(ib.Outputs[0].Data) != 2 || ib.Outputs[0].Data[0] != 4*v {
			t.Errorf("request %d: got %+v, want y[0] = %v (its own row)", i, ib.Outputs, 4*v)
		}
		results <- ib
	}
	wg.Add(1)
	go send(0)
	waitFor(t, "first batch running", func() bool { return dyn.runs.Load() >= 4 }) // 3 warm-up sizes (1, 2, 4) + 1
	for i := 1; i <= 4; i++ {
		wg.Add(1)
		go send(i)
	}
	waitFor(t, "four requests queued", func() bool { return len(reg.entry("dyn", false).snap.Load().versions["1"].exec.queue) == 4 })
	dyn.gate <- struct{}{}
	dyn.gate <- struct{}{}
	wg.Wait()
	close(results)
	sizes := map[float64]int{}
	for r := range results {
		sizes[r.Parameters["batch_size"].(float64)]++
	}
	if sizes[1] != 1 || sizes[4] != 4 {
		t.Errorf("batch sizes seen %v, want one of 1 and four of 4", sizes)
	}

	// A fixed batch dimension of 4: one row is padded up to 4.
	code, _, b := post(t, c, "/v2/models/static/infer", rowReq("", []float32{1, 2, 3, 4}), nil)
	if ib := decode(t, b); code != 200 || ib.Outputs[0].Data[0] != 20 || len(ib.Outputs[0].Shape) != 2 || ib.Outputs[0].Shape[0] != 1 {
		t.Errorf("padded batch: %d %s", code, b)
	}
	if static.rows.Load() != 4 {
		t.Errorf("static model ran %d rows, want 4 (padded)", static.rows.Load())
	}
	code, _, b = post(t, c, "/v2/models/static/infer", rowReq("", make([]float32, 4), make([]float32, 4), make([]float32, 4), make([]float32, 4), make([]float32, 4)), nil)
	if code != 400 || !strings.Contains(string(b), "1..4") {
		t.Errorf("5 rows for a batch of 4: %d %s", code, b)
	}
	if code, body := do(t, c, "GET", "/v2/models/static", ""); code != 200 || fmt.Sprint(body["inputs"]) != "[map[datatype:FP32 name:x shape:[-1 4]]]" {
		t.Errorf("batched model metadata: %v", body)
	}

	// Batching is refused for a model without a batch dimension.
	if err := reg.Configure("one", ModelOptions{Batching: &Batching{}}); err != nil {
		t.Fatal(err)
	}
	if err := reg.Load(context.Background(), "one", "1", "test", &rowModel{b: 1}, true); !errors.Is(err, ErrOptions) {
		t.Errorf("batching a [1,4] model: %v, want ErrOptions", err)
	}
}

func TestRoutesLabelsSplitShadow(t *testing.T) {
	reg := NewRegistry()
	c, _ := startServer(t, reg, Options{})
	mustLoad(t, reg, "m", "1", &rowModel{b: 1, scale: 1}, true)
	mustLoad(t, reg, "m", "2", &rowModel{b: 1, scale: 2}, false)
	if err := reg.Configure("m", ModelOptions{Routes: Routes{Labels: map[string]string{"canary": "2"}}}); err != nil {
		t.Fatal(err)
	}
	body := rowReq("", []float32{1, 1, 1, 1})
	for path, want := range map[string]string{
		"/v2/models/m/infer": "1", "/v2/models/m/labels/stable/infer": "1", "/v2/models/m/labels/canary/infer": "2",
		"/v2/models/m/versions/2/infer": "2", "/v2/models/m/versions/canary/infer": "2",
	} {
		code, h, b := post(t, c, path, body, nil)
		if code != 200 || decode(t, b).ModelVersion != want || h.Get(HeaderVersion) != want {
			t.Errorf("%s: %d %s, want version %s", path, code, b, want)
		}
	}
	if code, body := do(t, c, "GET", "/v2/models/m", ""); code != 200 || fmt.Sprint(body["versions"]) != "[1 2]" {
		t.Errorf("metadata versions: %v", body)
	}

	// A/B: a 30% share to the canary, sticky per route key.
	if err := reg.Configure("m", ModelOptions{Routes: Routes{Labels: map[string]string{"canary": "2"}, Split: []Split{{Target: "canary", Percent: 30}}}}); err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for i := range 200 {
		key := fmt.Sprint("device-", i)
		code, _, b := post(t, c, "/v2/models/m/infer", body, map[string]string{HeaderRouteKey: key})
		v := decode(t, b).ModelVersion
		if code != 200 {
			t.Fatalf("split: %d %s", code, b)
		}
		got[v]++
		_, _, b2 := post(t, c, "/v2/models/m/infer", body, map[string]string{HeaderRouteKey: key})
		if v2 := decode(t, b2).ModelVersion; v2 != v {
			t.Errorf("key %s went to %s then %s; a key must stay on one side", key, v, v2)
		}
	}
	if got["1"]+got["2"] != 200 || got["2"] < 30 || got["2"] > 90 {
		t.Errorf("30%% split over 200 keys: %v", got)
	}

	// Shadow: live answers from 1, copies compared on 2 (twice the
	// output: top-1 agrees, mean abs diff = sum/2 = 2).
	if err := reg.Configure("m", ModelOptions{Routes: Routes{Labels: map[string]string{"canary": "2"}, Shadow: "canary"}}); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		code, _, b := post(t, c, "/v2/models/m/infer", body, nil)
		if ib := decode(t, b); code != 200 || ib.ModelVersion != "1" || ib.Outputs[0].Data[0] != 4 {
			t.Fatalf("with shadow: %d %s, want the live answer from 1", code, b)
		}
	}
	waitFor(t, "shadow comparisons", func() bool { return reg.ShadowStats("m")["2"].Compared+reg.ShadowStats("m")["2"].Dropped == 10 })
	st := reg.ShadowStats("m")["2"]
	if st.Compared == 0 || st.Agreement() != 1 || math.Abs(st.MeanAbsDiff()-2) > 1e-9 {
		t.Errorf("shadow stats %+v: want agreement 1, mean abs diff 2", st)
	}
	_, metrics := get(t, c, "/metrics")
	if !strings.Contains(metrics, `starling_serve_shadow_top1_agree_total{model="m",shadow_version="2",version="1"}`) {
		t.Errorf("/metrics lacks the shadow agreement series")
	}

	// Activating 2 retires 1 unless a route names it.
	mustLoad(t, reg, "m", "3", &rowModel{b: 1, scale: 3}, true)
	if vs := reg.Versions("m"); fmt.Sprint(vs) != "[2 3]" {
		t.Errorf("after activating 3: versions %v, want [2 3] (1 retired, 2 named by a label)", vs)
	}
}

func get(t testing.TB, c *http.Client, path string) (int, string) {
	t.Helper()
	resp, err := c.Get("http://agent" + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestWarmUpAndMetrics(t *testing.T) {
	reg := NewRegistry()
	c, _ := startServer(t, reg, Options{})
	m := &rowModel{b: 1, scale: 1}
	mustLoad(t, reg, "m", "1", m, true)
	if m.runs.Load() != 1 {
		t.Errorf("model ran %d times before serving, want 1 warm-up run", m.runs.Load())
	}
	// A model whose warm-up fails is not swapped in; the old one serves.
	bad := &rowModel{b: 1, scale: 5, warmFail: true}
	if err := reg.Load(context.Background(), "m", "2", "test", bad, true); err == nil || !bad.closed.Load() {
		t.Errorf("failed warm-up: err %v, closed %v; want an error and the model closed", err, bad.closed.Load())
	}
	if v := reg.Version("m"); v != "1" {
		t.Errorf("after a failed warm-up version %q serves, want 1", v)
	}
	post(t, c, "/v2/models/m/infer", rowReq("", []float32{1, 2, 3, 4}), nil)
	post(t, c, "/v2/models/m/infer", []byte(`{"inputs":[{"name":"x","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}`), nil)
	code, text := get(t, c, "/metrics")
	for _, want := range []string{
		`starling_serve_requests_total{code="ok",model="m",version="1"} 1`,
		`starling_serve_failures_total{model="m",reason="bad_request",version="1"} 1`,
		`starling_serve_compute_seconds_count{model="m",version="1"} 1`,
		`starling_serve_queue_seconds_count{model="m",version="1"} 1`,
		`starling_serve_batch_size_count{model="m",version="1"} 1`,
		`starling_serve_queue_depth{model="m",version="1"} 0`,
	} {
		if code != 200 || !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
