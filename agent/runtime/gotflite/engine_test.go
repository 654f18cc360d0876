package gotflite_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"

	"github.com/starling-edge/starling/agent/runtime"
	"github.com/starling-edge/starling/agent/runtime/gotflite"
	"github.com/starling-edge/starling/shared/tensor"
)

func readDemo(tb testing.TB) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(modelsDir, "demo", "model.tflite"))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func loadDemo(tb testing.TB, opts runtime.LoadOptions) runtime.Model {
	tb.Helper()
	m, err := gotflite.New(gotflite.Options{}).Load(readDemo(tb), opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { m.Close() })
	return m
}

func demoInput(seed int) tensor.Tensor {
	v := make([]float32, 8)
	for i := range v {
		v[i] = float32((seed*7+i*3)%11)/5 - 1
	}
	return tensor.FromFloat32("input", []int64{1, 8}, v)
}

func TestRegistered(t *testing.T) {
	e, err := runtime.ForFormat("tflite")
	if err != nil {
		t.Fatal(err)
	}
	if e.Name() != "gotflite" || e.Format() != "tflite" {
		t.Fatalf("ForFormat(tflite) = %s/%s", e.Name(), e.Format())
	}
}

func TestSignature(t *testing.T) {
	m := loadDemo(t, runtime.LoadOptions{})
	want := runtime.Signature{
		Inputs:  []runtime.TensorSpec{{Name: "input", DType: tensor.Fp32, Shape: []int64{1, 8}}},
		Outputs: []runtime.TensorSpec{{Name: "probabilities", DType: tensor.Fp32, Shape: []int64{1, 3}}},
	}
	if got := m.Signature(); !reflect.DeepEqual(got, want) {
		t.Fatalf("Signature() = %+v, want %+v", got, want)
	}
}

func TestRunInputErrors(t *testing.T) {
	m := loadDemo(t, runtime.LoadOptions{})
	good := demoInput(1)
	tests := []struct {
		name   string
		inputs []tensor.Tensor
		want   string
	}{
		{"none", nil, "model takes 1 inputs, got 0"},
		{"two", []tensor.Tensor{good, good}, "model takes 1 inputs, got 2"},
		{"dtype", []tensor.Tensor{{Name: "input", DType: tensor.Int32, Shape: []int64{1, 8}, Data: make([]byte, 32)}}, "datatype INT32, want FP32"},
		{"shape", []tensor.Tensor{tensor.FromFloat32("input", []int64{8}, make([]float32, 8))}, "shape [8], want [1 8]"},
		{"batch", []tensor.Tensor{tensor.FromFloat32("input", []int64{2, 8}, make([]float32, 16))}, "shape [2 8], want [1 8]"},
		{"bytes", []tensor.Tensor{{Name: "input", DType: tensor.Fp32, Shape: []int64{1, 8}, Data: make([]byte, 31)}}, "needs 32 bytes, got 31"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := m.Run(context.Background(), tt.inputs)
			if !errors.Is(err, runtime.ErrInput) {
				t.Fatalf("Run: %v, want ErrInput", err)
			}
			if !bytes.Contains([]byte(err.Error()), []byte(tt.want)) {
				t.Fatalf("Run: %q does not say %q", err, tt.want)
			}
		})
	}
	// The model still works after bad input.
	if _, err := m.Run(context.Background(), []tensor.Tensor{good}); err != nil {
		t.Fatal(err)
	}
}

func TestRunProbabilities(t *testing.T) {
	m := loadDemo(t, runtime.LoadOptions{})
	out, err := m.Run(context.Background(), []tensor.Tensor{demoInput(3)})
	if err != nil {
		t.Fatal(err)
	}
	p, err := out[0].Float32s()
	if err != nil {
		t.Fatal(err)
	}
	var sum float32
	for _, v := range p {
		if v <= 0 || v >= 1 {
			t.Fatalf("probability %v out of (0, 1): %v", v, p)
		}
		sum += v
	}
	if sum < 0.999 || sum > 1.001 {
		t.Fatalf("probabilities %v sum to %v", p, sum)
	}
	if out[0].Name != "probabilities" {
		t.Fatalf("output name %q", out[0].Name)
	}
}

func TestClose(t *testing.T) {
	m := loadDemo(t, runtime.LoadOptions{})
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Run(context.Background(), []tensor.Tensor{demoInput(0)}); !errors.Is(err, runtime.ErrClosed) {
		t.Fatalf("Run after Close: %v, want ErrClosed", err)
	}
}

func TestRunCancelled(t *testing.T) {
	m := loadDemo(t, runtime.LoadOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := m.Run(ctx, []tensor.Tensor{demoInput(0)}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run with cancelled context: %v", err)
	}
}

// TestConcurrentRuns runs many inferences at once, more than there are
// executors, and checks each against the sequential result (run with -race).
func TestConcurrentRuns(t *testing.T) {
	for _, threads := range []int{1, 3} {
		t.Run(fmt.Sprintf("threads=%d", threads), func(t *testing.T) {
			m, err := gotflite.New(gotflite.Options{MaxConcurrent: 2}).Load(readDemo(t), runtime.LoadOptions{Threads: threads})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			const n = 16
			want := make([][]byte, n)
			for i := range want {
				out, err := m.Run(context.Background(), []tensor.Tensor{demoInput(i)})
				if err != nil {
					t.Fatal(err)
				}
				want[i] = out[0].Data
			}
			var wg sync.WaitGroup
			errs := make(chan error, n*4)
			for g := 0; g < n*4; g++ {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					out, err := m.Run(context.Background(), []tensor.Tensor{demoInput(i)})
					if err != nil {
						errs <- err
						return
					}
					if !bytes.Equal(out[0].Data, want[i]) {
						errs <- fmt.Errorf("input %d: concurrent result differs from sequential", i)
					}
				}(g % n)
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}
