// Package gotflite is Starling's pure-Go TensorFlow Lite interpreter: the
// engine every agent binary has, with no cgo, so that the agent stays one
// static binary for amd64, arm64 and armv7.
//
// It reads the .tflite flatbuffer with its own bounds-checked reader (a
// model arrives from the network: loading never panics, loops or allocates
// more than a small multiple of the file and Options.MaxArenaBytes), checks
// every operator's shapes and types once at load, and plans all
// intermediate tensors into one arena per element type, so an inference
// allocates nothing but its output tensors. Results are held to the official
// TFLite reference kernels by a conformance test over testdata/models.
package gotflite

import (
	"context"
	"math"
	goruntime "runtime"

	"github.com/starling-edge/starling/agent/runtime"
	"github.com/starling-edge/starling/shared/tensor"
)

func init() { runtime.Register(New(Options{})) }

// DefaultMaxArenaBytes is Options.MaxArenaBytes' default.
const DefaultMaxArenaBytes = 1 << 30

// maxThreads bounds LoadOptions.Threads.
const maxThreads = 64

// Options tune the engine. The zero value is valid.
type Options struct {
	// MaxArenaBytes bounds the tensor memory one inference of a model may
	// need; a model that needs more fails to load with ErrInvalidModel.
	// It also bounds the size of any single tensor. Default 1 GiB.
	MaxArenaBytes int64
	// MaxConcurrent bounds how many inferences of one model run at the same
	// time. Each running inference owns an arena, created on first need and
	// kept for reuse, so a model costs up to MaxConcurrent arenas of memory;
	// further Run calls wait for a free one. Default GOMAXPROCS.
	MaxConcurrent int
	// MaxBatch is the largest batch a model with a dynamic batch dimension
	// (dimension 0 of its inputs converted as None) accepts; 1 turns batch
	// sizes other than the converted one off. Default 256.
	MaxBatch int
	// MaxBatchPlans bounds how many batch sizes of one model are kept
	// prepared, least recently used evicted. Each costs a preparation on
	// first use (about a Load) and its own executors' arenas, scaled by
	// the batch; the artifact is retained to prepare them. Default 8.
	MaxBatchPlans int
}

// IntoRunner is implemented by every model gotflite loads. RunInto is Run
// writing into caller-owned outputs: outputs[i].Data must already have the
// output's byte size; Name, DType and Shape are set (Shape is reused when it
// already holds the right dimensions). After the first call on a model it
// allocates nothing, which is what a latency-sensitive server wants.
type IntoRunner interface {
	RunInto(ctx context.Context, inputs, outputs []tensor.Tensor) error
}

var _ IntoRunner = (*model)(nil)

// Engine is the gotflite engine. Create it with New.
type Engine struct {
	opts Options
}

var _ runtime.Engine = (*Engine)(nil)

// New returns an engine with opts' defaults applied.
func New(opts Options) *Engine {
	if opts.MaxArenaBytes <= 0 {
		opts.MaxArenaBytes = DefaultMaxArenaBytes
	}
	// Element counts and offsets are ints: keep them far from overflow on
	// 32-bit platforms.
	if opts.MaxArenaBytes > math.MaxInt/4 {
		opts.MaxArenaBytes = math.MaxInt / 4
	}
	if opts.MaxConcurrent <= 0 {
		opts.MaxConcurrent = goruntime.GOMAXPROCS(0)
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = DefaultMaxBatch
	}
	if opts.MaxBatchPlans <= 0 {
		opts.MaxBatchPlans = DefaultMaxBatchPlans
	}
	return &Engine{opts: opts}
}

// Name implements runtime.Engine.
func (*Engine) Name() string { return "gotflite" }

// Format implements runtime.Engine.
func (*Engine) Format() string { return "tflite" }

// Load implements runtime.Engine. It returns an error wrapping
// runtime.ErrInvalidModel for a malformed or inconsistent file and
// runtime.ErrUnsupported, naming the operator or type, for a model that
// needs something gotflite does not implement. opts.Threads (default 1,
// at most 64) is how many goroutines one inference may use for the heavy
// operators. A model whose inputs have a dynamic batch dimension also runs
// inputs with dimension 0 of 1..Options.MaxBatch (see batch.go); for it
// the artifact is copied and retained, for any other it is not.
func (e *Engine) Load(artifact []byte, opts runtime.LoadOptions) (runtime.Model, error) {
	threads := opts.Threads
	if threads <= 0 {
		threads = 1
	}
	if threads > maxThreads {
		threads = maxThreads
	}
	m, err := e.load(artifact, threads)
	if err != nil {
		return nil, err
	}
	return m, nil
}
