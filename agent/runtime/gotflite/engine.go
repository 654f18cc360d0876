// Package gotflite is Starling's pure-Go TensorFlow Lite interpreter: the
// engine every agent binary has, with no cgo.
package gotflite

import (
	"fmt"

	"github.com/starling-edge/starling/agent/runtime"
)

func init() { runtime.Register(Engine{}) }

// Engine is the gotflite engine.
type Engine struct{}

var _ runtime.Engine = Engine{}

// Name implements runtime.Engine.
func (Engine) Name() string { return "gotflite" }

// Format implements runtime.Engine.
func (Engine) Format() string { return "tflite" }

// Load implements runtime.Engine.
func (Engine) Load(artifact []byte, opts runtime.LoadOptions) (runtime.Model, error) {
	return nil, fmt.Errorf("gotflite: interpreter not written yet: %w", runtime.ErrUnsupported)
}
