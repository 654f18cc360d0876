package serve

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/starling-edge/starling/agent/runtime"
	"github.com/starling-edge/starling/agent/runtime/gotflite"
	"github.com/starling-edge/starling/shared/tensor"
)

// TestBatchingGotflite serves the real batchable test model (input
// [None, 256]) through gotflite with dynamic batching: concurrent callers,
// however they are grouped, each get the answer a lone run of their rows
// gives.
func TestBatchingGotflite(t *testing.T) {
	art, err := os.ReadFile("../../testdata/models/dense_batch/model.tflite")
	if err != nil {
		t.Fatal(err)
	}
	eng := gotflite.New(gotflite.Options{})
	load := func() runtime.Model {
		m, err := eng.Load(art, runtime.LoadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	reg := NewRegistry()
	c, _ := startServer(t, reg, Options{Models: map[string]ModelOptions{
		"dense": {Concurrency: 1, Batching: &Batching{MaxBatchSize: 8, MaxQueueDelay: 2 * time.Millisecond}},
	}})
	mustLoad(t, reg, "dense", "1", load(), true)
	ref := load()
	t.Cleanup(func() { ref.Close() })

	row := func(i int) []float32 {
		r := make([]float32, 256)
		for j := range r {
			r[j] = float32((i*31+j*7)%23)/23 - 0.5
		}
		return r
	}
	var wg sync.WaitGroup
	errs := make(chan error, 24)
	for i := range 24 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rows := 1 + i%3
			var flat []float32
			for r := range rows {
				flat = append(flat, row(i*3+r)...)
			}
			body, _ := json.Marshal(map[string]any{"inputs": []any{map[string]any{
				"name": "input", "datatype": "FP32", "shape": []int{rows, 256}, "data": flat}}})
			code, _, b := post(t, c, "/v2/models/dense/infer", body, nil)
			if code != 200 {
				errs <- fmt.Errorf("request %d: %d %s", i, code, b)
				return
			}
			ib := decode(t, b)
			if len(ib.Outputs) != 1 || len(ib.Outputs[0].Data) != rows*10 || ib.Outputs[0].Shape[0] != int64(rows) {
				errs <- fmt.Errorf("request %d: outputs %+v", i, ib.Outputs)
				return
			}
			in := tensor.FromFloat32("input", []int64{int64(rows), 256}, flat)
			want, err := ref.Run(context.Background(), []tensor.Tensor{in})
			if err != nil {
				errs <- err
				return
			}
			wf, err := want[0].Float32s()
			if err != nil {
				errs <- err
				return
			}
			for k, w := range wf {
				if g := ib.Outputs[0].Data[k]; math.Abs(float64(g-w)) > 1e-5 {
					errs <- fmt.Errorf("request %d value %d: %g, alone %g (batch of %v)", i, k, g, w, ib.Parameters["batch_size"])
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
}
