package gotflite

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	rt "github.com/starling-edge/starling/agent/runtime"
	"github.com/starling-edge/starling/shared/tensor"
)

// testModels loads every testdata model with the given thread count.
func testModels(tb testing.TB, threads int) map[string]*model {
	tb.Helper()
	paths, _ := filepath.Glob(filepath.Join("..", "..", "..", "testdata", "models", "*", "model.tflite"))
	if len(paths) == 0 {
		tb.Fatal("no testdata models")
	}
	out := map[string]*model{}
	for _, path := range paths {
		b, err := os.ReadFile(path)
		if err != nil {
			tb.Fatal(err)
		}
		m, err := New(Options{}).Load(b, rt.LoadOptions{Threads: threads})
		if err != nil {
			tb.Fatalf("%s: %v", path, err)
		}
		tb.Cleanup(func() { m.Close() })
		out[filepath.Base(filepath.Dir(path))] = m.(*model)
	}
	return out
}

// patternInputs builds deterministic inputs of the model's shapes.
func patternInputs(m *model, seed int) []tensor.Tensor {
	ins := make([]tensor.Tensor, len(m.ins))
	for i, ti := range m.ins {
		t := &m.tensors[ti]
		size, _ := t.typ.size()
		data := make([]byte, t.n*size)
		for j := range data {
			data[j] = byte((j*31 + seed*17) % 251)
		}
		if t.typ == tFloat32 {
			// Keep floats finite and moderate: small positive exponents.
			for j := 3; j < len(data); j += 4 {
				data[j] = 0x3f
			}
		}
		ins[i] = tensor.Tensor{Name: m.sig.Inputs[i].Name, DType: m.sig.Inputs[i].DType, Shape: shape64(t.shape), Data: data}
	}
	return ins
}

func outputBuffers(m *model) []tensor.Tensor {
	out := make([]tensor.Tensor, len(m.outs))
	for i, ti := range m.outs {
		t := &m.tensors[ti]
		size, _ := t.typ.size()
		out[i].Data = make([]byte, t.n*size)
	}
	return out
}

// TestRunIntoAllocatesNothing holds every test model to zero allocations
// per inference after warm-up, single- and multi-threaded.
func TestRunIntoAllocatesNothing(t *testing.T) {
	for _, threads := range []int{1, 3} {
		for name, m := range testModels(t, threads) {
			t.Run(fmt.Sprintf("%s/threads=%d", name, threads), func(t *testing.T) {
				ins, outs := patternInputs(m, 1), outputBuffers(m)
				ctx := context.Background()
				if err := m.RunInto(ctx, ins, outs); err != nil {
					t.Fatal(err)
				}
				allocs := testing.AllocsPerRun(10, func() {
					if err := m.RunInto(ctx, ins, outs); err != nil {
						t.Fatal(err)
					}
				})
				if allocs != 0 {
					t.Fatalf("RunInto allocates %v times per inference", allocs)
				}
			})
		}
	}
}

// TestThreadsAgree checks that splitting operators over threads changes
// no result bit.
func TestThreadsAgree(t *testing.T) {
	one := testModels(t, 1)
	four := testModels(t, 4)
	for name, m1 := range one {
		m4 := four[name]
		for seed := 0; seed < 2; seed++ {
			a, err := m1.Run(context.Background(), patternInputs(m1, seed))
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			b, err := m4.Run(context.Background(), patternInputs(m4, seed))
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			for i := range a {
				if !bytes.Equal(a[i].Data, b[i].Data) {
					t.Errorf("%s seed %d: output %d differs between 1 and 4 threads", name, seed, i)
				}
			}
		}
	}
}

func TestRunIntoErrors(t *testing.T) {
	m := testModels(t, 1)["demo"]
	ins := patternInputs(m, 0)
	tests := []struct {
		name string
		outs []tensor.Tensor
		want string
	}{
		{"no outputs", nil, "model has 1 outputs, got 0 to fill"},
		{"short buffer", []tensor.Tensor{{Data: make([]byte, 11)}}, "buffer of 11 bytes, want 12"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := m.RunInto(context.Background(), ins, tt.outs)
			if !errors.Is(err, rt.ErrInput) || !bytes.Contains([]byte(err.Error()), []byte(tt.want)) {
				t.Fatalf("RunInto: %v, want ErrInput saying %q", err, tt.want)
			}
		})
	}
}

// TestCloseStopsWorkers checks that a multi-threaded model's worker
// goroutines exit by the time Close returns, idle or busy.
func TestCloseStopsWorkers(t *testing.T) {
	before := liveWorkers.Load()
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "testdata", "models", "mobilenet_v2", "model.tflite"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(Options{MaxConcurrent: 2}).Load(b, rt.LoadOptions{Threads: 4})
	if err != nil {
		t.Fatal(err)
	}
	mm := m.(*model)
	// Two concurrent runs create both executors, three workers each.
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := m.Run(context.Background(), patternInputs(mm, 0)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if live := liveWorkers.Load() - before; live < 3 || live > 6 {
		t.Fatalf("%d workers while loaded, want 3 to 6", live)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if live := liveWorkers.Load() - before; live != 0 {
		t.Fatalf("%d workers still running after Close", live)
	}
}
