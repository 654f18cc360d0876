package serve

import (
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// tritonPython is the venv `make test-deps` creates with the pinned
// tritonclient[all] (agent/serve/testdata/tritonclient/requirements.txt).
const tritonPython = "../../.venv-triton/bin/python"

// TestTritonClient runs the official Triton Python client, over HTTP and
// gRPC, against the API's TCP listeners: health, metadata, and inference
// (binary and JSON tensors), checked against the official TFLite
// interpreter's recorded answer.
func TestTritonClient(t *testing.T) {
	if _, err := os.Stat(tritonPython); err != nil {
		t.Fatalf("no tritonclient venv at %s (run `make test-deps`): %v", tritonPython, err)
	}
	reg := NewRegistry()
	loadDemo(t, reg, "1")
	opts := Options{TCP: "127.0.0.1:0", GRPCTCP: "127.0.0.1:0"}
	s := startServerWith(t, reg, &opts)
	in, want := demoCase(t)
	data, _ := json.Marshal(in)
	script, _ := filepath.Abs("testdata/tritonclient/check.py")
	cmd := exec.Command(tritonPython, script, s.TCPAddr(), s.GRPCTCPAddr(), "demo", string(data))
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("check.py: %v\n%s", err, stderr)
	}
	var r map[string]any
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("check.py output %q: %v", out, err)
	}
	for _, k := range []string{"http_live", "http_ready", "http_model_ready", "grpc_live", "grpc_ready", "grpc_model_ready"} {
		if r[k] != true {
			t.Errorf("%s = %v, want true", k, r[k])
		}
	}
	for _, k := range []string{"http_infer_binary", "http_infer_json", "grpc_infer"} {
		rows, _ := r[k].([]any)
		if len(rows) != 1 {
			t.Errorf("%s = %v", k, r[k])
			continue
		}
		got := rows[0].([]any)
		for i := range want {
			if d := got[i].(float64) - float64(want[i]); math.Abs(d) > 1e-5 {
				t.Errorf("%s[%d] = %v, reference %v", k, i, got[i], want[i])
			}
		}
	}
	for _, k := range []string{"http_model_metadata", "grpc_model_metadata"} {
		md, _ := r[k].(map[string]any)
		if md["name"] != "demo" || md["platform"] != "tflite" {
			t.Errorf("%s = %v", k, r[k])
		}
	}
	// Every HTTP call is one the fast path answers: live, ready, model
	// ready, server and model metadata, two inferences, the unknown model.
	if n := s.fastAnswered.Load(); n != 8 {
		t.Errorf("the fast path answered %d of the client's 8 HTTP requests", n)
	}
	for _, k := range []string{"http_unknown", "grpc_unknown"} {
		if s, _ := r[k].(string); !strings.Contains(s, "not served") {
			t.Errorf("%s = %v, want the not-served error", k, r[k])
		}
	}
}
