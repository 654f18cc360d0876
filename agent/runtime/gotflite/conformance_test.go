package gotflite_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/starling-edge/starling/agent/runtime"
	_ "github.com/starling-edge/starling/agent/runtime/gotflite"
	"github.com/starling-edge/starling/shared/tensor"
)

// modelsDir holds the models tools/modelgen builds, with the official
// interpreter's outputs.
const modelsDir = "../../../testdata/models"

type refTensor struct {
	Name     string    `json:"name"`
	DataType string    `json:"datatype"`
	Shape    []int64   `json:"shape"`
	Data     []float64 `json:"data"`
}

type refFile struct {
	Model string `json:"model"`
	Cases []struct {
		Inputs  []refTensor `json:"inputs"`
		Outputs []refTensor `json:"outputs"`
	} `json:"cases"`
}

// refModel is one testdata model with its reference outputs.
type refModel struct {
	name     string
	artifact []byte
	ref      refFile
}

// extraModelsEnv names a folder of further modelgen output (for example
// the full-size benchmark models) that the conformance test and the
// benchmarks include.
const extraModelsEnv = "STARLING_EXTRA_MODELS"

func loadRefModels(tb testing.TB) []refModel {
	tb.Helper()
	refs, err := filepath.Glob(filepath.Join(modelsDir, "*", "reference.json"))
	if err != nil {
		tb.Fatal(err)
	}
	if len(refs) == 0 {
		tb.Fatalf("no reference.json under %s", modelsDir)
	}
	if dir := os.Getenv(extraModelsEnv); dir != "" {
		extra, err := filepath.Glob(filepath.Join(dir, "*", "reference.json"))
		if err != nil || len(extra) == 0 {
			tb.Fatalf("%s=%s: no */reference.json there (%v)", extraModelsEnv, dir, err)
		}
		refs = append(refs, extra...)
	}
	var out []refModel
	for _, path := range refs {
		raw, err := os.ReadFile(path)
		if err != nil {
			tb.Fatal(err)
		}
		var rm refModel
		rm.name = filepath.Base(filepath.Dir(path))
		if err := json.Unmarshal(raw, &rm.ref); err != nil {
			tb.Fatalf("%s: %v", path, err)
		}
		if len(rm.ref.Cases) == 0 {
			tb.Fatalf("%s: no cases", path)
		}
		if rm.artifact, err = os.ReadFile(filepath.Join(filepath.Dir(path), rm.ref.Model)); err != nil {
			tb.Fatal(err)
		}
		out = append(out, rm)
	}
	return out
}

// encode turns a reference tensor into a tensor.Tensor.
func encode(tb testing.TB, r refTensor) tensor.Tensor {
	tb.Helper()
	dt := tensor.DType(r.DataType)
	b := make([]byte, len(r.Data)*dt.Size())
	for i, v := range r.Data {
		switch dt {
		case tensor.Fp32:
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(float32(v)))
		case tensor.Int8, tensor.Uint8, tensor.Bool:
			b[i] = byte(int64(v))
		case tensor.Int16:
			binary.LittleEndian.PutUint16(b[2*i:], uint16(int64(v)))
		case tensor.Int32:
			binary.LittleEndian.PutUint32(b[4*i:], uint32(int64(v)))
		case tensor.Int64:
			binary.LittleEndian.PutUint64(b[8*i:], uint64(int64(v)))
		default:
			tb.Fatalf("tensor %q: datatype %s not handled by the test", r.Name, dt)
		}
	}
	t := tensor.Tensor{Name: r.Name, DType: dt, Shape: r.Shape, Data: b}
	if err := t.Validate(); err != nil {
		tb.Fatal(err)
	}
	return t
}

// decode returns a tensor's elements as float64s.
func decode(tb testing.TB, t tensor.Tensor) []float64 {
	tb.Helper()
	if err := t.Validate(); err != nil {
		tb.Fatal(err)
	}
	n := len(t.Data) / t.DType.Size()
	out := make([]float64, n)
	for i := range out {
		switch t.DType {
		case tensor.Fp32:
			out[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*i:])))
		case tensor.Int8:
			out[i] = float64(int8(t.Data[i]))
		case tensor.Uint8:
			out[i] = float64(t.Data[i])
		case tensor.Bool:
			out[i] = float64(t.Data[i])
		case tensor.Int16:
			out[i] = float64(int16(binary.LittleEndian.Uint16(t.Data[2*i:])))
		case tensor.Int32:
			out[i] = float64(int32(binary.LittleEndian.Uint32(t.Data[4*i:])))
		case tensor.Int64:
			out[i] = float64(int64(binary.LittleEndian.Uint64(t.Data[8*i:])))
		default:
			tb.Fatalf("tensor %q: datatype %s not handled by the test", t.Name, t.DType)
		}
	}
	return out
}

// compare checks got against the official output: float32 within
// 1e-4 x the output's range; integers at least 99.9% equal and none more
// than one quantization step off.
func compare(want refTensor, got []float64) error {
	if len(got) != len(want.Data) {
		return fmt.Errorf("%d elements, want %d", len(got), len(want.Data))
	}
	if want.DataType == string(tensor.Fp32) {
		lo, hi := math.Inf(1), math.Inf(-1)
		for _, v := range want.Data {
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
		rng := hi - lo
		if rng == 0 {
			rng = math.Max(1, math.Abs(hi))
		}
		tol := 1e-4 * rng
		worst, at := 0.0, -1
		for i, v := range want.Data {
			if d := math.Abs(got[i] - v); d > worst || math.IsNaN(d) {
				worst, at = d, i
			}
		}
		if worst > tol || math.IsNaN(worst) {
			return fmt.Errorf("max abs error %g at %d (got %g, want %g) exceeds %g (1e-4 x range %g)", worst, at, got[at], want.Data[at], tol, rng)
		}
		return nil
	}
	off := 0
	for i, v := range want.Data {
		d := math.Abs(got[i] - v)
		if d > 1 {
			return fmt.Errorf("element %d is %g, want %g: more than one step off", i, got[i], v)
		}
		if d != 0 {
			off++
		}
	}
	if float64(off) > 0.001*float64(len(got)) {
		return fmt.Errorf("%d of %d elements differ by one step, more than 0.1%%", off, len(got))
	}
	return nil
}

// exactOutputs are outputs that hold counts or labels in float32 (those
// of TFLite_Detection_PostProcess): they must equal the reference exactly.
var exactOutputs = map[string]bool{"detection_classes": true, "num_detections": true}

// runCase runs one reference case and compares every output.
func runCase(t *testing.T, m runtime.Model, inputs, outputs []refTensor) {
	t.Helper()
	sig := m.Signature()
	byName := map[string]refTensor{}
	for _, in := range inputs {
		byName[in.Name] = in
	}
	ins := make([]tensor.Tensor, len(sig.Inputs))
	for i, spec := range sig.Inputs {
		r, ok := byName[spec.Name]
		if !ok {
			t.Fatalf("reference has no input %q (signature %+v)", spec.Name, sig.Inputs)
		}
		ins[i] = encode(t, r)
	}
	got, err := m.Run(context.Background(), ins)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if len(got) != len(outputs) {
		t.Fatalf("got %d outputs, want %d", len(got), len(outputs))
	}
	gotByName := map[string]tensor.Tensor{}
	for _, o := range got {
		gotByName[o.Name] = o
	}
	for _, want := range outputs {
		o, ok := gotByName[want.Name]
		if !ok {
			t.Fatalf("no output %q among %v", want.Name, sig.Outputs)
		}
		if string(o.DType) != want.DataType || fmt.Sprint(o.Shape) != fmt.Sprint(want.Shape) {
			t.Fatalf("output %q is %s %v, want %s %v", want.Name, o.DType, o.Shape, want.DataType, want.Shape)
		}
		g := decode(t, o)
		if err := compare(want, g); err != nil {
			t.Errorf("output %q: %v", want.Name, err)
		}
		if exactOutputs[want.Name] {
			for i, v := range want.Data {
				if g[i] != v {
					t.Errorf("output %q element %d is %g, want exactly %g", want.Name, i, g[i], v)
					break
				}
			}
		}
	}
}

// TestConformance runs every testdata model on every recorded case and
// holds the results to the official TFLite interpreter's.
func TestConformance(t *testing.T) {
	eng, err := runtime.Lookup("gotflite")
	if err != nil {
		t.Fatal(err)
	}
	for _, rm := range loadRefModels(t) {
		t.Run(rm.name, func(t *testing.T) {
			m, err := eng.Load(rm.artifact, runtime.LoadOptions{})
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			defer m.Close()
			for i, c := range rm.ref.Cases {
				t.Run(fmt.Sprint(i), func(t *testing.T) { runCase(t, m, c.Inputs, c.Outputs) })
			}
		})
	}
}
