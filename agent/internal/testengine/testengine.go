// Package testengine is a tiny engine for agent tests that need a model
// whose behaviour they control (a load failure, a slow run). It registers
// as engine "testengine" for format "testfmt" and is imported only by
// tests, so no agent binary links it.
//
// An artifact is the text "testfmt scale=<float>" (input "input" FP32
// [1,8] -> output "probabilities" FP32 [1,3], out[j] = scale * sum of
// in[j], in[j+3], in[j+6]) or "testfmt broken" (Load fails).
package testengine

import (
	"context"
	"fmt"
	"strings"

	"github.com/starling-edge/starling/agent/runtime"
	"github.com/starling-edge/starling/shared/tensor"
)

// Name and Format the engine registers under.
const (
	Name   = "testengine"
	Format = "testfmt"
)

func init() { runtime.Register(Engine{}) }

// Engine is the test engine.
type Engine struct{}

var _ runtime.Engine = Engine{}

// Name implements runtime.Engine.
func (Engine) Name() string { return Name }

// Format implements runtime.Engine.
func (Engine) Format() string { return Format }

// Artifact returns a loadable artifact computing scale * sums.
func Artifact(scale float32) []byte { return fmt.Appendf(nil, "testfmt scale=%g", scale) }

// Broken is an artifact whose Load fails with runtime.ErrInvalidModel.
var Broken = []byte("testfmt broken")

// Load implements runtime.Engine.
func (Engine) Load(artifact []byte, _ runtime.LoadOptions) (runtime.Model, error) {
	var scale float32
	if _, err := fmt.Sscanf(string(artifact), "testfmt scale=%g", &scale); err != nil || !strings.HasPrefix(string(artifact), "testfmt ") {
		return nil, fmt.Errorf("testengine: artifact %.20q: %w", artifact, runtime.ErrInvalidModel)
	}
	return &model{scale: scale}, nil
}

type model struct{ scale float32 }

func (m *model) Signature() runtime.Signature {
	return runtime.Signature{
		Inputs:  []runtime.TensorSpec{{Name: "input", DType: tensor.Fp32, Shape: []int64{1, 8}}},
		Outputs: []runtime.TensorSpec{{Name: "probabilities", DType: tensor.Fp32, Shape: []int64{1, 3}}},
	}
}

func (m *model) Run(_ context.Context, in []tensor.Tensor) ([]tensor.Tensor, error) {
	if len(in) != 1 || in[0].DType != tensor.Fp32 || tensor.NumElements(in[0].Shape) != 8 {
		return nil, fmt.Errorf("testengine: want one FP32 [1,8] input: %w", runtime.ErrInput)
	}
	v, err := in[0].Float32s()
	if err != nil {
		return nil, fmt.Errorf("testengine: %v: %w", err, runtime.ErrInput)
	}
	out := make([]float32, 3)
	for i, x := range v {
		out[i%3] += m.scale * x
	}
	return []tensor.Tensor{tensor.FromFloat32("probabilities", []int64{1, 3}, out)}, nil
}

func (m *model) Close() error { return nil }
