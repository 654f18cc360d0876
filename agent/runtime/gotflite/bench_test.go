package gotflite_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/starling-edge/starling/agent/runtime"
	"github.com/starling-edge/starling/agent/runtime/gotflite"
	"github.com/starling-edge/starling/shared/tensor"
)

// BenchmarkInference times one inference of every test model (and of the
// models in $STARLING_EXTRA_MODELS, such as the full-size MobileNet v2 that
// tools/modelgen builds on request) with 1 and 4 threads:
//
//	python tools/modelgen/modelgen.py --out /tmp/bench --only mobilenet_v2_1.0_224,mobilenet_v2_1.0_224_int8
//	STARLING_EXTRA_MODELS=/tmp/bench go test -run '^$' -bench Inference ./agent/runtime/gotflite
func BenchmarkInference(b *testing.B) {
	for _, rm := range loadRefModels(b) {
		for _, threads := range []int{1, 4} {
			b.Run(fmt.Sprintf("%s/threads=%d", rm.name, threads), func(b *testing.B) {
				m, err := gotflite.New(gotflite.Options{}).Load(rm.artifact, runtime.LoadOptions{Threads: threads})
				if err != nil {
					b.Fatal(err)
				}
				defer m.Close()
				sig := m.Signature()
				ins := make([]tensor.Tensor, len(sig.Inputs))
				for i, spec := range sig.Inputs {
					for _, r := range rm.ref.Cases[0].Inputs {
						if r.Name == spec.Name {
							ins[i] = encode(b, r)
						}
					}
				}
				outs, err := m.Run(context.Background(), ins)
				if err != nil {
					b.Fatal(err)
				}
				into := m.(gotflite.IntoRunner)
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					if err := into.RunInto(context.Background(), ins, outs); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
