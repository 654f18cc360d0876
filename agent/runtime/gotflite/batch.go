package gotflite

import (
	"bytes"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/starling-edge/starling/agent/runtime"
	"github.com/starling-edge/starling/shared/tensor"
)

// Batch sizes.
//
// The converter writes a model whose batch dimension is None with a static
// dimension 0 of 1 and a shape signature of -1, on its inputs and on every
// tensor that follows the batch. Operators are prepared for static shapes
// (that is what lets an inference allocate nothing and index nothing out of
// range), so a model runs other batch sizes through plans: on the first Run
// with dimension 0 = N, the model is prepared once more with dimension 0 of
// every dynamic-batch tensor multiplied by N, and that plan (its kernels,
// arena sizes and executors) is kept for the next Run of the same size.
// Constant data is decoded once and shared by all plans. Plans are bounded
// (Options.MaxBatchPlans, least recently used evicted) and so are the sizes
// (Options.MaxBatch).

// DefaultMaxBatch is Options.MaxBatch's default.
const DefaultMaxBatch = 256

// DefaultMaxBatchPlans is Options.MaxBatchPlans' default.
const DefaultMaxBatchPlans = 8

// batching is a batchable model's state for other batch sizes.
type batching struct {
	e        *Engine
	artifact []byte // a private copy, to prepare further plans from
	threads  int
	consts   map[[2]int]views // decoded constants, shared by every plan; mu held

	plans atomic.Pointer[[]*batchPlan] // copy on write under mu
	clock atomic.Int64                 // use counter, for least-recently-used eviction
	mu    sync.Mutex                   // serialises planning, eviction and close
	done  bool                         // closed; mu held
}

// batchPlan is the model prepared for one batch size, or why it cannot be.
type batchPlan struct {
	n    int
	m    *model
	err  error
	used atomic.Int64
}

// batchable reports whether every input has a dynamic dimension 0 that was
// converted as 1 (a Keras/TF batch of None), which is what a plan can scale.
func (m *model) batchable() bool {
	if len(m.ins) == 0 {
		return false
	}
	for _, ti := range m.ins {
		t := &m.tensors[ti]
		if len(t.shape) == 0 || t.sig[0] != -1 || t.shape[0] != 1 {
			return false
		}
	}
	return true
}

// initBatching makes a batchable model ready to plan other batch sizes,
// retaining a copy of the artifact; consts are the constants its load
// decoded. Other models are left as they are.
func (m *model) initBatching(e *Engine, artifact []byte, threads int, consts map[[2]int]views) {
	if e.opts.MaxBatch < 2 || !m.batchable() {
		return
	}
	m.batch = &batching{e: e, artifact: bytes.Clone(artifact), threads: threads, consts: consts}
}

// forInputs returns the model that runs inputs: m itself, or the plan for
// the batch size the inputs carry. It allocates nothing once that plan
// exists.
func (m *model) forInputs(inputs []tensor.Tensor) (*model, error) {
	b := m.batch
	if b == nil || len(inputs) != len(m.ins) || len(inputs) == 0 {
		return m, nil
	}
	t := &m.tensors[m.ins[0]]
	shape := inputs[0].Shape
	if len(shape) != len(t.shape) || shape[0] == int64(t.shape[0]) {
		return m, nil // checkInputs says what is wrong, if anything
	}
	n := shape[0]
	if n < 1 || n > int64(b.e.opts.MaxBatch) {
		return nil, inputf("input 0 (%s): batch dimension %d outside 1..%d", m.sig.Inputs[0].Name, n, b.e.opts.MaxBatch)
	}
	if ps := b.plans.Load(); ps != nil {
		for _, p := range *ps {
			if p.n == int(n) {
				p.used.Store(b.clock.Add(1))
				return p.m, p.err
			}
		}
	}
	return b.plan(int(n))
}

// plan prepares (or finds, when another Run just did) the plan for batch
// size n, evicting the least recently used plan past the bound.
func (b *batching) plan(n int) (*model, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return nil, fmt.Errorf("gotflite: Run: %w", runtime.ErrClosed)
	}
	var old []*batchPlan
	if ps := b.plans.Load(); ps != nil {
		old = *ps
	}
	for _, p := range old {
		if p.n == n {
			p.used.Store(b.clock.Add(1))
			return p.m, p.err
		}
	}
	p := &batchPlan{n: n}
	p.m, p.err = b.e.build(b.artifact, b.threads, n, b.consts)
	if p.err != nil {
		p.m = nil
		p.err = inputf("batch size %d: the model cannot be planned for it: %v", n, p.err)
	}
	p.used.Store(b.clock.Add(1))
	next := slices.Clone(old)
	if len(next) >= b.e.opts.MaxBatchPlans {
		lru := 0
		for i, q := range next {
			if q.used.Load() < next[lru].used.Load() {
				lru = i
			}
		}
		if q := next[lru]; q.m != nil {
			q.m.Close() // Runs in flight on it finish first
		}
		next = slices.Delete(next, lru, lru+1)
	}
	next = append(next, p)
	b.plans.Store(&next)
	return p.m, p.err
}

// close closes every plan; later plan calls fail.
func (b *batching) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.done = true
	if ps := b.plans.Load(); ps != nil {
		for _, p := range *ps {
			if p.m != nil {
				p.m.Close()
			}
		}
	}
	b.plans.Store(nil)
}
