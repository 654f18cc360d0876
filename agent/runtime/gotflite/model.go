package gotflite

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/starling-edge/starling/agent/runtime"
	"github.com/starling-edge/starling/shared/tensor"
)

// model is a loaded, prepared model. It is immutable after Load except for
// its pool of executors.
//
// Concurrency: each running inference takes an executor (its own arena and
// tensor views) from a bounded pool and gives it back when done, so Run is
// safe for concurrent use and concurrent Runs never share memory. At most
// Options.MaxConcurrent executors exist; a Run that finds none free waits
// for one or for its context.
type model struct {
	sig      runtime.Signature
	tensors  []tinfo
	ins      []int // tensor indices, in signature order
	outs     []int
	kernels  []kernel
	opNames  []string
	sizes    arenaSizes
	scratch  int // int32s of per-executor scratch
	fscratch int // float32s of per-executor scratch
	threads  int
	batch    *batching // nil unless the batch dimension is dynamic (batch.go)

	free   chan *executor // idle executors
	tokens chan struct{}  // one per executor that may still be created
	closed atomic.Bool
	mu     sync.Mutex // orders release against Close
}

var _ runtime.Model = (*model)(nil)

// executor is the mutable state of one inference.
type executor struct {
	a        arenas
	v        views
	threads  int
	pool     *workers  // nil when threads is 1
	scratch  []int32   // shared by the operators, one at a time
	fscratch []float32 // likewise
}

func (m *model) init(maxConcurrent int) {
	m.free = make(chan *executor, maxConcurrent)
	m.tokens = make(chan struct{}, maxConcurrent)
	for i := 0; i < maxConcurrent; i++ {
		m.tokens <- struct{}{}
	}
}

func (m *model) newExecutor() *executor {
	ex := &executor{threads: m.threads, scratch: make([]int32, m.scratch), fscratch: make([]float32, m.fscratch)}
	if m.threads > 1 {
		ex.pool = startWorkers(m.threads - 1)
	}
	s := m.sizes
	ex.a = arenas{
		f32: make([]float32, s[0]),
		i32: make([]int32, s[1]),
		u8:  make([]uint8, s[2]),
		i8:  make([]int8, s[3]),
		i16: make([]int16, s[4]),
		i64: make([]int64, s[5]),
		b:   make([]bool, s[6]),
	}
	n := len(m.tensors)
	ex.v = views{
		f32: make([][]float32, n),
		i32: make([][]int32, n),
		u8:  make([][]uint8, n),
		i8:  make([][]int8, n),
		i16: make([][]int16, n),
		i64: make([][]int64, n),
		b:   make([][]bool, n),
	}
	for i := range m.tensors {
		if t := &m.tensors[i]; t.kind != kindUnused {
			ex.v.set(i, t, &ex.a)
		}
	}
	return ex
}

// acquire takes an idle executor, creates one if the bound allows, or waits.
func (m *model) acquire(ctx context.Context) (*executor, error) {
	select {
	case ex := <-m.free:
		return ex, nil
	default:
	}
	select {
	case ex := <-m.free:
		return ex, nil
	case <-m.tokens:
		return m.newExecutor(), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// release returns an executor to the pool (which has room for every
// executor ever created, so this never blocks), or stops its workers when
// the model was closed meanwhile.
func (m *model) release(ex *executor) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed.Load() {
		ex.stop()
		return
	}
	m.free <- ex
}

func (ex *executor) stop() {
	if ex.pool != nil {
		ex.pool.stop()
		ex.pool = nil
	}
}

// Signature implements runtime.Model.
func (m *model) Signature() runtime.Signature { return m.sig }

// Close implements runtime.Model. Runs in flight finish; later Runs fail
// with runtime.ErrClosed. The executors' worker goroutines are stopped:
// idle ones here, busy ones when their Run ends.
func (m *model) Close() error {
	if m.batch != nil {
		m.batch.close()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed.Store(true)
	for {
		select {
		case ex := <-m.free:
			ex.stop()
		default:
			return nil
		}
	}
}

// Run implements runtime.Model. Inputs are matched by position and must
// have exactly the model's static shape, except that a dynamic batch
// dimension (batch.go) takes any size from 1 to Options.MaxBatch; other
// dynamic dimensions take the size the model was converted with. The
// output tensors are newly allocated; RunInto reuses the caller's.
func (m *model) Run(ctx context.Context, inputs []tensor.Tensor) ([]tensor.Tensor, error) {
	for {
		if m.closed.Load() {
			return nil, fmt.Errorf("gotflite: Run: %w", runtime.ErrClosed)
		}
		p, err := m.forInputs(inputs)
		if err != nil {
			return nil, err
		}
		out := make([]tensor.Tensor, len(p.outs))
		for i, ti := range p.outs {
			t := &p.tensors[ti]
			size, _ := t.typ.size()
			out[i].Data = make([]byte, t.n*size)
		}
		err = p.runPlanned(ctx, inputs, out)
		if p != m && errors.Is(err, runtime.ErrClosed) {
			continue // the batch plan was evicted meanwhile
		}
		if err != nil {
			return nil, err
		}
		return out, nil
	}
}

// RunInto implements IntoRunner.
func (m *model) RunInto(ctx context.Context, inputs, outputs []tensor.Tensor) error {
	for {
		if m.closed.Load() {
			return fmt.Errorf("gotflite: Run: %w", runtime.ErrClosed)
		}
		p, err := m.forInputs(inputs)
		if err != nil {
			return err
		}
		err = p.runPlanned(ctx, inputs, outputs)
		if p != m && errors.Is(err, runtime.ErrClosed) {
			continue // the batch plan was evicted meanwhile
		}
		return err
	}
}

// runPlanned is RunInto on the model prepared for the inputs' batch size.
func (m *model) runPlanned(ctx context.Context, inputs, outputs []tensor.Tensor) error {
	if m.closed.Load() {
		return fmt.Errorf("gotflite: Run: %w", runtime.ErrClosed)
	}
	if err := m.checkInputs(inputs); err != nil {
		return err
	}
	if len(outputs) != len(m.outs) {
		return inputf("model has %d outputs, got %d to fill", len(m.outs), len(outputs))
	}
	for i, ti := range m.outs {
		t := &m.tensors[ti]
		size, _ := t.typ.size()
		if len(outputs[i].Data) != t.n*size {
			return inputf("output %d (%s): buffer of %d bytes, want %d", i, m.sig.Outputs[i].Name, len(outputs[i].Data), t.n*size)
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	ex, err := m.acquire(ctx)
	if err != nil {
		return err
	}
	defer m.release(ex)
	for i, ti := range m.ins {
		ex.v.getBytes(ti, &m.tensors[ti], inputs[i].Data)
	}
	done := ctx.Done()
	for i, k := range m.kernels {
		select {
		case <-done:
			return ctx.Err()
		default:
		}
		if err := k(ex); err != nil {
			return fmt.Errorf("gotflite: operator %d (%s): %w", i, m.opNames[i], err)
		}
	}
	for i, ti := range m.outs {
		t := &m.tensors[ti]
		spec := &m.sig.Outputs[i]
		o := &outputs[i]
		o.Name, o.DType = spec.Name, spec.DType
		if !sameShape64(o.Shape, t.shape) {
			o.Shape = shape64(t.shape)
		}
		ex.v.putBytes(ti, t, o.Data)
	}
	return nil
}

func (m *model) checkInputs(inputs []tensor.Tensor) error {
	if len(inputs) != len(m.ins) {
		return inputf("model takes %d inputs, got %d", len(m.ins), len(inputs))
	}
	for i := range inputs {
		in := &inputs[i]
		spec := &m.sig.Inputs[i]
		t := &m.tensors[m.ins[i]]
		if in.DType != spec.DType {
			return inputf("input %d (%s): datatype %s, want %s", i, spec.Name, in.DType, spec.DType)
		}
		if !sameShape64(in.Shape, t.shape) {
			return inputf("input %d (%s): shape %v, want %v", i, spec.Name, in.Shape, t.shape)
		}
		if err := in.Validate(); err != nil {
			return inputf("input %d (%s): %v", i, spec.Name, err)
		}
	}
	return nil
}

func sameShape64(a []int64, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != int64(b[i]) {
			return false
		}
	}
	return true
}
