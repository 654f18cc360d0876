package gotflite

import (
	"math"
	goruntime "runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Union type numbers of the BuiltinOptions table types used here
// (schema.fbs union BuiltinOptions; 0 is NONE).
const (
	optConv2D          = 1
	optDepthwiseConv2D = 2
	optPool2D          = 5
	optFullyConnected  = 8
	optSoftmax         = 9
	optConcatenation   = 10
	optAdd             = 11
	optReshape         = 17
	optMul             = 21
	optPad             = 22
	optReducer         = 27
	optSub             = 28
	optSqueeze         = 30
)

// Fused activation functions (schema.fbs ActivationFunctionType).
const (
	actNone      = 0
	actRelu      = 1
	actReluN1To1 = 2
	actRelu6     = 3
)

// actRange returns the float clamp range of a fused activation.
func actRange(code int8) (lo, hi float32, err error) {
	switch code {
	case actNone:
		return float32(math.Inf(-1)), float32(math.Inf(1)), nil
	case actRelu:
		return 0, float32(math.Inf(1)), nil
	case actReluN1To1:
		return -1, 1, nil
	case actRelu6:
		return 0, 6, nil
	}
	return 0, 0, unsupported("fused activation %d", code)
}

func clampf(x, lo, hi float32) float32 {
	if x < lo {
		return lo
	}
	if x > hi {
		return hi
	}
	return x
}

// numElements returns the product of dims (all non-negative and bounded at
// load, so it cannot overflow).
func numElements(dims []int) int {
	n := 1
	for _, d := range dims {
		n *= d
	}
	return n
}

// rowKernel is an operator whose work splits into independent ranges of
// rows; implementations are long-lived values built at load, so handing
// one to a worker allocates nothing.
type rowKernel interface {
	rows(ex *executor, lo, hi int)
}

// minRowWork is the least work (multiply-adds) worth a worker.
const minRowWork = 1 << 15

// parallel runs k over rows [0, n) split into at most ex.threads
// contiguous ranges: the executor's workers take all but the last, which
// runs on the calling goroutine, and parallel returns when all are done.
func (ex *executor) parallel(n int, work int64, k rowKernel) {
	t := ex.threads
	if t > n {
		t = n
	}
	if work/minRowWork < int64(t) {
		t = int(work / minRowWork)
	}
	if t <= 1 || ex.pool == nil {
		k.rows(ex, 0, n)
		return
	}
	w := ex.pool
	chunk := (n + t - 1) / t
	w.pending.Store(int32((n - 1) / chunk)) // the ranges before the last
	lo, i := 0, 0
	for ; lo+chunk < n; lo += chunk {
		w.slots[i].post(job{k: k, ex: ex, lo: lo, hi: lo + chunk})
		i++
	}
	k.rows(ex, lo, n)
	w.wait()
}

// job is one range of rows for a worker.
type job struct {
	k      rowKernel
	ex     *executor
	lo, hi int
}

// spinFor is how long an idle worker, or a caller waiting for its workers,
// polls before it parks. A layer takes only tens to hundreds of
// microseconds, so parking after each one and being woken for the next
// (a futex wake of an idle core both on dispatch and on completion) ate
// the whole gain of a second thread; polling bridges the short gaps
// between the layers of a run, and the workers park once it is over.
const spinFor = 100 * time.Microsecond

// workers are an executor's helper goroutines, started with the executor
// and stopped when the model is closed. Only the goroutine running the
// executor posts jobs, one parallel call at a time.
type workers struct {
	slots   []slot
	pending atomic.Int32  // posted jobs not yet finished
	parked  atomic.Bool   // the caller is parked on finished
	finish  chan struct{} // wakes the parked caller; capacity 1
	spin    bool          // poll before parking (more than one P)
	done    sync.WaitGroup
}

// slot hands jobs to one worker: post stores the job and bumps seq, the
// worker polls seq, then parks on wake after setting parked, and post
// wakes it when it finds parked set. Either the worker sees the new seq or
// post sees parked, so no wake-up is lost; a stale wake-up only makes the
// worker look at seq again.
type slot struct {
	w      *workers
	seq    atomic.Uint64
	parked atomic.Bool
	quit   bool // read after seq changes, set by stop
	job    job
	wake   chan struct{} // capacity 1
	_      [64]byte      // keep slots on separate cache lines
}

// liveWorkers counts worker goroutines that have not yet exited, for tests.
var liveWorkers atomic.Int64

func startWorkers(n int) *workers {
	w := &workers{slots: make([]slot, n), finish: make(chan struct{}, 1), spin: goruntime.GOMAXPROCS(0) > 1}
	w.done.Add(n)
	liveWorkers.Add(int64(n))
	for i := range w.slots {
		s := &w.slots[i]
		s.w, s.wake = w, make(chan struct{}, 1)
		go s.loop()
	}
	return w
}

func (s *slot) post(j job) {
	s.job = j
	s.seq.Add(1)
	if s.parked.Load() && s.parked.Swap(false) {
		select {
		case s.wake <- struct{}{}:
		default: // a wake-up is already pending
		}
	}
}

func (s *slot) loop() {
	defer s.w.done.Done()
	defer liveWorkers.Add(-1)
	var seen uint64
	for {
		seq := s.await(seen)
		seen = seq
		if s.quit {
			return
		}
		s.job.k.rows(s.job.ex, s.job.lo, s.job.hi)
		s.job = job{}
		s.w.finished()
	}
}

// await returns seq once it differs from seen: polling for spinFor, then
// parked.
func (s *slot) await(seen uint64) uint64 {
	if s.w.spin {
		var start time.Time
		for i := 0; ; i++ {
			if seq := s.seq.Load(); seq != seen {
				return seq
			}
			if i&63 == 63 {
				if start.IsZero() {
					start = time.Now()
				} else if time.Since(start) > spinFor {
					break
				}
			}
		}
	}
	for {
		s.parked.Store(true)
		if seq := s.seq.Load(); seq != seen {
			s.parked.Store(false)
			return seq
		}
		<-s.wake
	}
}

// finished counts one job done and wakes the caller after the last.
func (w *workers) finished() {
	if w.pending.Add(-1) == 0 && w.parked.Load() && w.parked.Swap(false) {
		select {
		case w.finish <- struct{}{}:
		default:
		}
	}
}

// wait returns once every posted job is done: polling for spinFor, then
// parked, with the handshake of slot.
func (w *workers) wait() {
	if w.spin {
		var start time.Time
		for i := 0; ; i++ {
			if w.pending.Load() == 0 {
				return
			}
			if i&63 == 63 {
				if start.IsZero() {
					start = time.Now()
				} else if time.Since(start) > spinFor {
					break
				}
			}
		}
	}
	for {
		w.parked.Store(true)
		if w.pending.Load() == 0 {
			w.parked.Store(false)
			return
		}
		<-w.finish
	}
}

// stop ends the workers and waits for them to exit. The executor must be
// idle.
func (w *workers) stop() {
	for i := range w.slots {
		s := &w.slots[i]
		s.quit = true
		s.post(job{})
	}
	w.done.Wait()
}

// bcast describes an elementwise binary operation with NumPy-style
// broadcasting, in at most maxRank dimensions.
type bcast struct {
	rank   int
	out    [maxRank]int // output dimensions
	sa, sb [maxRank]int // element strides of a and b; 0 where broadcast
	n      int          // output elements
	same   bool         // a, b and out have one shape: a flat loop will do
}

// newBcast checks that a and b broadcast to out.
func newBcast(a, b, out []int) (*bcast, error) {
	r := len(out)
	if len(a) > r || len(b) > r {
		return nil, bad("output rank %d is less than an input's (%d, %d)", r, len(a), len(b))
	}
	bc := &bcast{rank: r, n: numElements(out)}
	bc.same = sameShape(a, out) && sameShape(b, out)
	strideA, strideB := 1, 1
	for i := r - 1; i >= 0; i-- {
		da, db := 1, 1
		if j := i - (r - len(a)); j >= 0 {
			da = a[j]
		}
		if j := i - (r - len(b)); j >= 0 {
			db = b[j]
		}
		want := da
		if da == 1 {
			want = db
		} else if db != 1 && db != da {
			return nil, bad("shapes %v and %v do not broadcast", a, b)
		}
		if out[i] != want {
			return nil, bad("shapes %v and %v broadcast to dimension %d = %d, output has %v", a, b, i, want, out)
		}
		bc.out[i] = out[i]
		if da != 1 {
			bc.sa[i] = strideA
		}
		if db != 1 {
			bc.sb[i] = strideB
		}
		strideA *= da
		strideB *= db
	}
	if r == 0 {
		bc.rank, bc.out[0] = 1, 1
	}
	return bc, nil
}

// each calls f for each innermost row: the output offset o, the input
// offsets ia and ib, and the row's length and input strides.
func (bc *bcast) each(f func(o, ia, ib, n, sa, sb int)) {
	if bc.n == 0 {
		return
	}
	r := bc.rank
	inner, sa, sb := bc.out[r-1], bc.sa[r-1], bc.sb[r-1]
	var idx [maxRank]int
	o, ia, ib := 0, 0, 0
	for {
		f(o, ia, ib, inner, sa, sb)
		o += inner
		d := r - 2
		for ; d >= 0; d-- {
			idx[d]++
			ia += bc.sa[d]
			ib += bc.sb[d]
			if idx[d] < bc.out[d] {
				break
			}
			ia -= idx[d] * bc.sa[d]
			ib -= idx[d] * bc.sb[d]
			idx[d] = 0
		}
		if d < 0 {
			return
		}
	}
}

// copyKernel copies in's data to out (same type and element count).
func copyKernel(in, out *tinfo) kernel {
	i, o := in.index, out.index
	switch in.typ {
	case tFloat32:
		return func(ex *executor) error { copy(ex.v.f32[o], ex.v.f32[i]); return nil }
	case tInt32:
		return func(ex *executor) error { copy(ex.v.i32[o], ex.v.i32[i]); return nil }
	case tUint8:
		return func(ex *executor) error { copy(ex.v.u8[o], ex.v.u8[i]); return nil }
	case tInt8:
		return func(ex *executor) error { copy(ex.v.i8[o], ex.v.i8[i]); return nil }
	case tInt16:
		return func(ex *executor) error { copy(ex.v.i16[o], ex.v.i16[i]); return nil }
	case tInt64:
		return func(ex *executor) error { copy(ex.v.i64[o], ex.v.i64[i]); return nil }
	case tBool:
		return func(ex *executor) error { copy(ex.v.b[o], ex.v.b[i]); return nil }
	}
	return nil
}
