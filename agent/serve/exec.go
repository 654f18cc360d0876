package serve

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/starling-edge/starling/agent/runtime"
	"github.com/starling-edge/starling/shared/tensor"
)

// executor runs one served version's inferences: it bounds how many run
// at once and how many wait, drops requests whose deadline passes while
// they wait, and, where the model allows it, groups concurrent requests
// into batches.
//
// Without batching a request runs on its caller's goroutine once it holds
// one of Concurrency slots; with batching, Concurrency batcher goroutines
// (owned by the executor, stopped by close) take requests from a bounded
// queue.
type executor struct {
	name, version string
	model         runtime.Model
	sig           runtime.Signature // as clients see it (batch dim -1 when batching)
	opts          ModelOptions
	m             *versionMetrics

	sem     chan struct{} // unbatched: run slots
	waiting atomic.Int64  // unbatched: requests waiting for a slot

	batch    bool
	maxBatch int
	allowed  []int // sorted batch sizes the model accepts
	delay    time.Duration
	queue    chan *job
	stop     chan struct{}
	wg       sync.WaitGroup

	computeNs atomic.Int64 // moving average of a run, for retry hints
}

// result is one request's answer.
type result struct {
	outs           []tensor.Tensor
	queue, compute time.Duration
	batch          int // rows of the run that answered it
}

type job struct {
	ctx    context.Context
	inputs []tensor.Tensor
	rows   int
	enq    time.Time
	done   chan jobResult // capacity 1: the batcher never blocks on it
}

type jobResult struct {
	res result
	err error
}

var jobPool = sync.Pool{New: func() any { return &job{done: make(chan jobResult, 1)} }}

// batchDim returns the model's batch dimension: ok when every input and
// output has dimension 0 either dynamic (static == -1) or static and the
// same > 1, and every other dimension static.
func batchDim(sig runtime.Signature) (static int64, ok bool) {
	static = 0
	all := append(slices.Clone(sig.Inputs), sig.Outputs...)
	if len(sig.Inputs) == 0 || len(sig.Outputs) == 0 {
		return 0, false
	}
	for i, sp := range all {
		if len(sp.Shape) < 1 {
			return 0, false
		}
		for _, d := range sp.Shape[1:] {
			if d < 0 {
				return 0, false
			}
		}
		d := sp.Shape[0]
		if d == 0 || (d > 0 && d < 2) {
			return 0, false
		}
		if i == 0 {
			static = d
		} else if d != static {
			return 0, false
		}
	}
	return static, true
}

// newExecutor prepares name:version for serving with opts (defaults
// applied). It starts the batchers, if any; close stops them.
func newExecutor(name, version string, m runtime.Model, opts ModelOptions, vm *versionMetrics) (*executor, error) {
	e := &executor{name: name, version: version, model: m, sig: m.Signature(), opts: opts, m: vm}
	e.sem = make(chan struct{}, opts.Concurrency)
	if b := opts.Batching; b != nil {
		static, ok := batchDim(e.sig)
		if !ok {
			return nil, fmt.Errorf("model %s:%s: batching is configured but the model has no batch dimension (dimension 0 of every input and output must be dynamic or the same static size > 1; signature %s): %w",
				name, version, describe(e.sig.Inputs), ErrOptions)
		}
		e.batch = true
		e.maxBatch = b.MaxBatchSize
		e.allowed = b.AllowedBatchSizes
		switch {
		case static > 0 && len(e.allowed) == 0:
			e.allowed = []int{int(static)}
		case static < 0 && len(e.allowed) == 0:
			if e.maxBatch == 0 {
				e.maxBatch = 8
			}
			// Powers of two and the maximum: few sizes, so an engine that
			// prepares each batch size once (gotflite) keeps them all, at
			// the price of padding a batch by less than half.
			for n := 1; n < e.maxBatch; n *= 2 {
				e.allowed = append(e.allowed, n)
			}
			e.allowed = append(e.allowed, e.maxBatch)
		}
		if static > 0 {
			for _, n := range e.allowed {
				if n != int(static) {
					return nil, fmt.Errorf("model %s:%s: allowed batch size %d, but the model's batch dimension is fixed at %d: %w", name, version, n, static, ErrOptions)
				}
			}
		}
		if top := e.allowed[len(e.allowed)-1]; e.maxBatch == 0 || e.maxBatch > top {
			e.maxBatch = top
		}
		e.delay = b.MaxQueueDelay
		e.sig = clientSignature(e.sig)
		e.queue = make(chan *job, opts.QueueSize)
		e.stop = make(chan struct{})
		for range opts.Concurrency {
			e.wg.Add(1)
			go e.batcher()
		}
	}
	return e, nil
}

// clientSignature marks dimension 0 dynamic: with batching a request may
// carry any number of rows up to the batch size.
func clientSignature(sig runtime.Signature) runtime.Signature {
	mark := func(specs []runtime.TensorSpec) []runtime.TensorSpec {
		out := make([]runtime.TensorSpec, len(specs))
		for i, sp := range specs {
			sp.Shape = slices.Clone(sp.Shape)
			sp.Shape[0] = -1
			out[i] = sp
		}
		return out
	}
	return runtime.Signature{Inputs: mark(sig.Inputs), Outputs: mark(sig.Outputs)}
}

// close stops the batchers (answering what is still queued with
// ErrUnavailable) and closes the model. Only call it once nobody can
// submit any more.
func (e *executor) close() {
	if e.batch {
		close(e.stop)
		e.wg.Wait()
	}
	e.model.Close()
}

// warm runs the model once at every batch size it will be asked for, so
// the first live request does not pay for first-run allocation.
func (e *executor) warm(ctx context.Context) error {
	sizes := []int{0}
	if e.batch {
		sizes = e.allowed
	}
	for _, n := range sizes {
		ins := make([]tensor.Tensor, len(e.sig.Inputs))
		for i, sp := range e.model.Signature().Inputs {
			shape := slices.Clone(sp.Shape)
			for j := range shape {
				if shape[j] < 0 {
					shape[j] = 1
				}
			}
			if n > 0 {
				shape[0] = int64(n)
			}
			ins[i] = tensor.Tensor{Name: sp.Name, DType: sp.DType, Shape: shape,
				Data: make([]byte, tensor.NumElements(shape)*int64(sp.DType.Size()))}
		}
		if _, err := e.model.Run(ctx, ins); err != nil {
			return fmt.Errorf("model %s:%s: warm-up run (batch %d): %w", e.name, e.version, max(n, 1), err)
		}
	}
	return nil
}

// run answers one request: inputs already fit e.sig.
func (e *executor) run(ctx context.Context, inputs []tensor.Tensor) (result, error) {
	start := time.Now()
	if e.batch {
		return e.runBatched(ctx, inputs, start)
	}
	select {
	case e.sem <- struct{}{}:
	default:
		if e.waiting.Add(1) > int64(e.opts.QueueSize) {
			e.waiting.Add(-1)
			return result{}, e.full()
		}
		e.m.depth.Inc()
		select {
		case e.sem <- struct{}{}:
			e.waiting.Add(-1)
			e.m.depth.Dec()
		case <-ctx.Done():
			e.waiting.Add(-1)
			e.m.depth.Dec()
			return result{}, e.expired(ctx, time.Since(start))
		}
	}
	defer func() { <-e.sem }()
	if ctx.Err() != nil {
		return result{}, e.expired(ctx, time.Since(start))
	}
	began := time.Now()
	outs, err := e.model.Run(ctx, inputs)
	end := time.Now()
	if err != nil {
		return result{}, e.runError(ctx, err)
	}
	e.record(began.Sub(start), end.Sub(began), 1)
	return result{outs: outs, queue: began.Sub(start), compute: end.Sub(began), batch: 1}, nil
}

func (e *executor) record(queue, compute time.Duration, rows int) {
	e.m.queue.Observe(queue.Seconds())
	e.m.compute.Observe(compute.Seconds())
	e.m.batch.Observe(float64(rows))
	// Moving average over ~8 runs; a lost update under a race only makes
	// the retry hint slightly stale.
	old := e.computeNs.Load()
	e.computeNs.Store(old + (int64(compute)-old)/8)
}

// full is the answer when the queue is at its bound: ErrQueueFull with a
// hint of when a slot is likely free (the queue's drain time).
func (e *executor) full() error {
	per := time.Duration(e.computeNs.Load())
	slots := max(e.opts.Concurrency, 1)
	if e.batch {
		slots *= max(e.maxBatch, 1)
	}
	after := max(per*time.Duration(e.opts.QueueSize)/time.Duration(slots), time.Millisecond)
	return &retryError{
		msg:   fmt.Sprintf("model %s:%s: queue full (%d waiting); retry after %v", e.name, e.version, e.opts.QueueSize, after.Round(time.Microsecond)),
		after: after,
	}
}

func (e *executor) expired(ctx context.Context, waited time.Duration) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("model %s:%s: deadline passed after %v in the queue; the request was dropped, not run: %w",
			e.name, e.version, waited.Round(time.Microsecond), ErrDeadline)
	}
	return fmt.Errorf("model %s:%s: request cancelled by the caller after %v in the queue; not run: %w",
		e.name, e.version, waited.Round(time.Microsecond), ErrUnavailable)
}

func (e *executor) runError(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, runtime.ErrInput):
		return fmt.Errorf("model %s:%s: %v: %w", e.name, e.version, err, ErrBadRequest)
	case errors.Is(err, runtime.ErrClosed):
		return fmt.Errorf("model %s:%s: %v: %w", e.name, e.version, err, ErrUnavailable)
	case ctx.Err() != nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)):
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("model %s:%s: deadline passed while running: %w", e.name, e.version, ErrDeadline)
		}
		return fmt.Errorf("model %s:%s: cancelled by the caller while running: %w", e.name, e.version, ErrUnavailable)
	}
	return fmt.Errorf("model %s:%s: inference failed: %v: %w", e.name, e.version, err, ErrInternal)
}

func (e *executor) runBatched(ctx context.Context, inputs []tensor.Tensor, start time.Time) (result, error) {
	rows := int(inputs[0].Shape[0])
	for _, in := range inputs[1:] {
		if int(in.Shape[0]) != rows {
			return result{}, fmt.Errorf("model %s:%s: inputs disagree on the batch dimension (%d and %d rows): %w", e.name, e.version, rows, in.Shape[0], ErrBadRequest)
		}
	}
	if rows < 1 || rows > e.maxBatch {
		return result{}, fmt.Errorf("model %s:%s: %d rows; a request may carry 1..%d: %w", e.name, e.version, rows, e.maxBatch, ErrBadRequest)
	}
	j := jobPool.Get().(*job)
	j.ctx, j.inputs, j.rows, j.enq = ctx, inputs, rows, start
	select {
	case e.queue <- j:
		e.m.depth.Inc()
	default:
		j.ctx, j.inputs = nil, nil
		jobPool.Put(j)
		return result{}, e.full()
	}
	select {
	case r := <-j.done:
		j.ctx, j.inputs = nil, nil
		jobPool.Put(j)
		return r.res, r.err
	case <-ctx.Done():
		// The batcher still answers j (into its buffered channel) or
		// skips it; j is not reused.
		return result{}, e.expired(ctx, time.Since(start))
	}
}

// batcher takes requests from the queue and runs them in batches of up to
// maxBatch rows, waiting at most delay after the first for more.
func (e *executor) batcher() {
	defer e.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var carry *job
	batch := make([]*job, 0, e.maxBatch)
	for {
		first := carry
		carry = nil
		if first == nil {
			select {
			case first = <-e.queue:
			case <-e.stop:
				e.drain()
				return
			}
		}
		batch = append(batch[:0], first)
		rows := first.rows
		if rows < e.maxBatch {
			timer.Reset(e.delay)
		collect:
			for rows < e.maxBatch {
				select {
				case j := <-e.queue:
					if rows+j.rows > e.maxBatch {
						carry = j
						break collect
					}
					batch = append(batch, j)
					rows += j.rows
				case <-timer.C:
					break collect
				}
			}
			timer.Stop()
		}
		e.runBatch(batch)
	}
}

// drain answers every queued request after stop.
func (e *executor) drain() {
	for {
		select {
		case j := <-e.queue:
			e.m.depth.Dec()
			j.done <- jobResult{err: fmt.Errorf("model %s:%s: stopped before the request ran: %w", e.name, e.version, ErrUnavailable)}
		default:
			return
		}
	}
}

// runBatch runs the live jobs of batch as one padded batch and hands each
// its rows of the outputs.
func (e *executor) runBatch(batch []*job) {
	began := time.Now()
	live := batch[:0]
	rows := 0
	for _, j := range batch {
		e.m.depth.Dec()
		if j.ctx.Err() != nil {
			j.done <- jobResult{err: e.expired(j.ctx, began.Sub(j.enq))}
			continue
		}
		live = append(live, j)
		rows += j.rows
	}
	if len(live) == 0 {
		return
	}
	size := e.allowed[len(e.allowed)-1]
	for _, n := range e.allowed {
		if n >= rows {
			size = n
			break
		}
	}
	var inputs []tensor.Tensor
	if len(live) == 1 && rows == size {
		inputs = live[0].inputs
	} else {
		specs := e.model.Signature().Inputs
		inputs = make([]tensor.Tensor, len(specs))
		for i, sp := range specs {
			shape := slices.Clone(live[0].inputs[i].Shape)
			rowBytes := len(live[0].inputs[i].Data) / live[0].rows
			shape[0] = int64(size)
			data := make([]byte, size*rowBytes)
			off := 0
			for _, j := range live {
				off += copy(data[off:], j.inputs[i].Data)
			}
			inputs[i] = tensor.Tensor{Name: sp.Name, DType: sp.DType, Shape: shape, Data: data}
		}
	}
	// A batch runs until its last member's deadline; members whose
	// deadline passes meanwhile get ErrDeadline from their own wait.
	ctx := context.Background()
	var cancel context.CancelFunc = func() {}
	if dl, ok := latestDeadline(live); ok {
		ctx, cancel = context.WithDeadline(ctx, dl)
	}
	outs, err := e.model.Run(ctx, inputs)
	cancel()
	end := time.Now()
	if err != nil {
		err = e.runError(ctx, err)
		for _, j := range live {
			j.done <- jobResult{err: err}
		}
		return
	}
	e.m.compute.Observe(end.Sub(began).Seconds())
	e.m.batch.Observe(float64(rows))
	old := e.computeNs.Load()
	e.computeNs.Store(old + (int64(end.Sub(began))-old)/8)
	off := 0
	for _, j := range live {
		res := result{outs: make([]tensor.Tensor, len(outs)), queue: began.Sub(j.enq), compute: end.Sub(began), batch: rows}
		e.m.queue.Observe(res.queue.Seconds())
		for k, o := range outs {
			n := int(o.Shape[0])
			if n != size || len(o.Data)%max(n, 1) != 0 {
				res = result{}
				err = fmt.Errorf("model %s:%s: output %q has %d rows for a batch of %d: %w", e.name, e.version, o.Name, n, size, ErrInternal)
				break
			}
			rb := len(o.Data) / n
			shape := slices.Clone(o.Shape)
			shape[0] = int64(j.rows)
			res.outs[k] = tensor.Tensor{Name: o.Name, DType: o.DType, Shape: shape, Data: o.Data[off*rb : (off+j.rows)*rb : (off+j.rows)*rb]}
		}
		off += j.rows
		j.done <- jobResult{res: res, err: err}
	}
}

func latestDeadline(jobs []*job) (time.Time, bool) {
	var dl time.Time
	for _, j := range jobs {
		d, ok := j.ctx.Deadline()
		if !ok {
			return time.Time{}, false
		}
		if d.After(dl) {
			dl = d
		}
	}
	return dl, true
}

// retryAfterSeconds rounds a hint up to whole seconds for Retry-After.
func retryAfterSeconds(d time.Duration) int {
	return int(math.Max(1, math.Ceil(d.Seconds())))
}
