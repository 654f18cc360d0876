// Package runtime is the agent's engine boundary: an Engine loads a model
// artifact into a Model with a typed signature, and a Model runs tensors in,
// tensors out. Engines register themselves by name from an init function;
// which ones a binary has depends on its build tags (see Engines).
package runtime

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/starling-edge/starling/shared/tensor"
)

// Sentinel errors. Engines wrap them so the serving layer can map them to
// a client error (4xx) or a server error (5xx).
var (
	// ErrUnknownEngine: no engine is registered under the requested name.
	ErrUnknownEngine = errors.New("runtime: unknown engine")
	// ErrInvalidModel: the artifact is malformed or unsafe to load.
	ErrInvalidModel = errors.New("runtime: invalid model")
	// ErrUnsupported: the artifact is well formed but uses something the
	// engine does not implement (an op, a type); the message names it.
	ErrUnsupported = errors.New("runtime: unsupported")
	// ErrInput: the caller's tensors do not fit the model's signature.
	ErrInput = errors.New("runtime: invalid input")
	// ErrClosed: Run was called after Close.
	ErrClosed = errors.New("runtime: model closed")
)

// TensorSpec describes one input or output. A dimension of -1 is dynamic.
type TensorSpec struct {
	Name  string       `json:"name"`
	DType tensor.DType `json:"datatype"`
	Shape []int64      `json:"shape"`
}

// Signature lists a model's inputs and outputs in order.
type Signature struct {
	Inputs  []TensorSpec `json:"inputs"`
	Outputs []TensorSpec `json:"outputs"`
}

// LoadOptions tune how an engine loads a model. The zero value is valid.
type LoadOptions struct {
	// Threads is the number of threads an inference may use; default 1.
	Threads int
}

// Engine loads artifacts of one format.
type Engine interface {
	// Name is the registry name, e.g. "gotflite".
	Name() string
	// Format is the artifact format it reads, e.g. "tflite".
	Format() string
	// Load parses and prepares an artifact. It returns an error wrapping
	// ErrInvalidModel or ErrUnsupported for a model it cannot run, and must
	// never panic on any input.
	Load(artifact []byte, opts LoadOptions) (Model, error)
}

// Model is a loaded model.
//
// IMPORTANT: Run must be safe for concurrent use; an engine that is not
// re-entrant serialises or pools internally.
type Model interface {
	Signature() Signature
	// Run checks inputs against the signature (ErrInput) and runs the model.
	// Inputs are matched by position; their names may be empty.
	Run(ctx context.Context, inputs []tensor.Tensor) ([]tensor.Tensor, error)
	Close() error
}

var (
	mu      sync.RWMutex
	engines = map[string]Engine{}
)

// Register adds an engine. It panics on a duplicate name, as that is a
// programming error in the binary's composition.
func Register(e Engine) {
	mu.Lock()
	defer mu.Unlock()
	if _, dup := engines[e.Name()]; dup {
		panic(fmt.Sprintf("runtime: engine %q registered twice", e.Name()))
	}
	engines[e.Name()] = e
}

// Lookup returns the engine registered under name.
func Lookup(name string) (Engine, error) {
	mu.RLock()
	defer mu.RUnlock()
	e, ok := engines[name]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownEngine, name)
	}
	return e, nil
}

// ForFormat returns the registered engine for an artifact format, preferring
// the names in order of the preference list, then any engine by name order.
func ForFormat(format string, preference ...string) (Engine, error) {
	mu.RLock()
	defer mu.RUnlock()
	for _, n := range preference {
		if e, ok := engines[n]; ok && e.Format() == format {
			return e, nil
		}
	}
	for _, n := range namesLocked() {
		if e := engines[n]; e.Format() == format {
			return e, nil
		}
	}
	return nil, fmt.Errorf("%w for format %q (built with: %v)", ErrUnknownEngine, format, namesLocked())
}

// Engines lists the registered engine names, sorted.
func Engines() []string {
	mu.RLock()
	defer mu.RUnlock()
	return namesLocked()
}

// namesLocked needs mu held.
func namesLocked() []string {
	out := make([]string, 0, len(engines))
	for n := range engines {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
