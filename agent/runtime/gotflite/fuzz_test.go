package gotflite

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/starling-edge/starling/agent/runtime"
	"github.com/starling-edge/starling/shared/tensor"
)

// FuzzLoad feeds arbitrary bytes to the loader, seeded with every test
// model. Load must return a model or an error wrapping ErrInvalidModel or
// ErrUnsupported, never panic or hang; a model that loads must also run on
// zero-valued inputs without panicking. Crashers found are kept under
// testdata/fuzz/FuzzLoad and replayed by plain go test.
//
//	go test -run '^$' -fuzz FuzzLoad -fuzztime 2m ./agent/runtime/gotflite
func FuzzLoad(f *testing.F) {
	paths, _ := filepath.Glob(filepath.Join("..", "..", "..", "testdata", "models", "*", "model.tflite"))
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("TFL3"))
	f.Fuzz(func(t *testing.T, b []byte) {
		e := New(Options{MaxArenaBytes: 1 << 20, MaxConcurrent: 1})
		m, err := e.Load(b, runtime.LoadOptions{Threads: 2})
		if err != nil {
			if !errors.Is(err, runtime.ErrInvalidModel) && !errors.Is(err, runtime.ErrUnsupported) {
				t.Fatalf("Load: %v wraps neither ErrInvalidModel nor ErrUnsupported", err)
			}
			return
		}
		defer m.Close()
		sig := m.Signature()
		ins := make([]tensor.Tensor, len(sig.Inputs))
		for i, s := range sig.Inputs {
			shape := m.(*model).tensors[m.(*model).ins[i]].shape
			ins[i] = tensor.Tensor{Name: s.Name, DType: s.DType, Shape: shape64(shape),
				Data: make([]byte, numElements(shape)*s.DType.Size())}
		}
		if _, err := m.Run(context.Background(), ins); err != nil && errors.Is(err, runtime.ErrInput) {
			t.Fatalf("Run on inputs shaped by the signature: %v", err)
		}
	})
}
