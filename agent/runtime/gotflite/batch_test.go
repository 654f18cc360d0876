package gotflite

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"

	rt "github.com/starling-edge/starling/agent/runtime"
	"github.com/starling-edge/starling/shared/tensor"
)

// loadBatchModel loads testdata/models/dense_batch (input [None, 256],
// output [None, 10]) with opts.
func loadBatchModel(tb testing.TB, opts Options) *model {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "testdata", "models", "dense_batch", "model.tflite"))
	if err != nil {
		tb.Fatal(err)
	}
	m, err := New(opts).Load(b, rt.LoadOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { m.Close() })
	return m.(*model)
}

// rowsInput is a [rows, 256] float input whose row r is filled from seed+r.
func rowsInput(rows, seed int) tensor.Tensor {
	data := make([]byte, rows*256*4)
	for r := range rows {
		for j := range 256 {
			v := float32((j*7+(seed+r)*13)%29)/29 - 0.5
			binary.LittleEndian.PutUint32(data[(r*256+j)*4:], math.Float32bits(v))
		}
	}
	return tensor.Tensor{Name: "input", DType: tensor.Fp32, Shape: []int64{int64(rows), 256}, Data: data}
}

func floats(b []byte) []float32 {
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out
}

// checkRows runs a batch of rows and holds each of its output rows to the
// same row run alone at batch 1.
func checkRows(t testing.TB, m *model, rows, seed int) {
	t.Helper()
	out, err := m.Run(context.Background(), []tensor.Tensor{rowsInput(rows, seed)})
	if err != nil {
		t.Fatalf("batch %d: %v", rows, err)
	}
	if got := out[0].Shape; len(got) != 2 || got[0] != int64(rows) || got[1] != 10 {
		t.Fatalf("batch %d: output shape %v, want [%d 10]", rows, got, rows)
	}
	all := floats(out[0].Data)
	for r := range rows {
		one, err := m.Run(context.Background(), []tensor.Tensor{rowsInput(1, seed+r)})
		if err != nil {
			t.Fatal(err)
		}
		want := floats(one[0].Data)
		for k, w := range want {
			// The batch runs the dense layers as a GEMM, one row alone as
			// dot products: sums in another order, equal to float32 noise.
			if g := all[r*10+k]; math.Abs(float64(g-w)) > 1e-5 {
				t.Fatalf("batch %d row %d class %d: %g, alone %g", rows, r, k, g, w)
			}
		}
	}
}

func TestBatchSizes(t *testing.T) {
	m := loadBatchModel(t, Options{})
	if got := m.Signature().Inputs[0].Shape; got[0] != -1 {
		t.Fatalf("signature input shape %v, want a dynamic batch dimension", got)
	}
	for _, rows := range []int{1, 2, 3, 7, 16, 2, 64} {
		checkRows(t, m, rows, rows)
	}
}

func TestBatchInputErrors(t *testing.T) {
	m := loadBatchModel(t, Options{MaxBatch: 8})
	wrongWidth := rowsInput(2, 0)
	wrongWidth.Shape = []int64{4, 128}
	for _, tc := range []struct {
		name string
		in   tensor.Tensor
	}{
		{"over MaxBatch", rowsInput(9, 0)},
		{"zero rows", tensor.Tensor{Name: "input", DType: tensor.Fp32, Shape: []int64{0, 256}}},
		{"other dimension changed", wrongWidth},
		{"data shorter than the shape", func() tensor.Tensor { in := rowsInput(3, 0); in.Data = in.Data[:100]; return in }()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := m.Run(context.Background(), []tensor.Tensor{tc.in})
			if !errors.Is(err, rt.ErrInput) {
				t.Fatalf("Run: %v, want ErrInput", err)
			}
		})
	}
	// The model still answers after the refusals.
	checkRows(t, m, 3, 1)
}

func TestBatchStaticModelRefusesOtherSizes(t *testing.T) {
	m := testModels(t, 1)["demo"]
	if m.batch != nil {
		t.Fatal("the demo model has a static batch of 1 but was made batchable")
	}
	in := tensor.Tensor{Name: "input", DType: tensor.Fp32, Shape: []int64{2, 8}, Data: make([]byte, 2*8*4)}
	if _, err := m.Run(context.Background(), []tensor.Tensor{in}); !errors.Is(err, rt.ErrInput) {
		t.Fatalf("Run at batch 2 on a static model: %v, want ErrInput", err)
	}
}

func TestBatchOff(t *testing.T) {
	m := loadBatchModel(t, Options{MaxBatch: 1})
	if _, err := m.Run(context.Background(), []tensor.Tensor{rowsInput(2, 0)}); !errors.Is(err, rt.ErrInput) {
		t.Fatalf("Run at batch 2 with MaxBatch 1: %v, want ErrInput", err)
	}
	checkRows(t, m, 1, 0)
}

// TestBatchPlansBounded runs more batch sizes than the plan bound, from
// several goroutines at once: plans are evicted and rebuilt under load and
// no Run fails.
func TestBatchPlansBounded(t *testing.T) {
	m := loadBatchModel(t, Options{MaxBatchPlans: 2, MaxConcurrent: 2})
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 12 {
				rows := 2 + (g+i)%5
				out, err := m.Run(context.Background(), []tensor.Tensor{rowsInput(rows, i)})
				if err != nil {
					errs <- fmt.Errorf("batch %d: %w", rows, err)
					return
				}
				if out[0].Shape[0] != int64(rows) {
					errs <- fmt.Errorf("batch %d: %d output rows", rows, out[0].Shape[0])
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := len(*m.batch.plans.Load()); n > 2 {
		t.Fatalf("%d plans kept, bound is 2", n)
	}
	checkRows(t, m, 5, 3)
}

func TestBatchClose(t *testing.T) {
	m := loadBatchModel(t, Options{})
	checkRows(t, m, 4, 0)
	plans := *m.batch.plans.Load()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	for _, p := range plans {
		if !p.m.closed.Load() {
			t.Fatalf("plan for batch %d still open after Close", p.n)
		}
	}
	if _, err := m.Run(context.Background(), []tensor.Tensor{rowsInput(4, 0)}); !errors.Is(err, rt.ErrClosed) {
		t.Fatalf("Run after Close: %v, want ErrClosed", err)
	}
}

// TestBatchRunIntoAllocatesNothing: once a batch size is planned, RunInto
// at that size allocates nothing, as at the converted size.
func TestBatchRunIntoAllocatesNothing(t *testing.T) {
	m := loadBatchModel(t, Options{MaxConcurrent: 1})
	in := []tensor.Tensor{rowsInput(4, 0)}
	out := []tensor.Tensor{{Data: make([]byte, 4*10*4)}}
	ctx := context.Background()
	if err := m.RunInto(ctx, in, out); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(20, func() {
		if err := m.RunInto(ctx, in, out); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("RunInto at batch 4 allocates %v times per run", n)
	}
}
