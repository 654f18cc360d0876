package serve

import (
	"context"
	"encoding/binary"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/starling-edge/starling/shared/tensor"
)

// ShadowStats compare a shadow version's answers with the live ones.
type ShadowStats struct {
	// Compared counts live requests whose copy the shadow answered.
	Compared int64
	// Agree counts compared requests where the first output's top-1
	// index (per row, over the last dimension) matched the live answer.
	Agree int64
	// SumAbsDiff sums, over compared requests, the mean absolute
	// difference of the first output's elements.
	SumAbsDiff float64
	// Dropped counts copies not run: the shadow queue was full, or the
	// shadow run failed.
	Dropped int64
}

// Agreement is Agree/Compared (0 before any comparison).
func (s ShadowStats) Agreement() float64 {
	if s.Compared == 0 {
		return 0
	}
	return float64(s.Agree) / float64(s.Compared)
}

// MeanAbsDiff is SumAbsDiff/Compared.
func (s ShadowStats) MeanAbsDiff() float64 {
	if s.Compared == 0 {
		return 0
	}
	return s.SumAbsDiff / float64(s.Compared)
}

// ShadowStats returns the comparison so far of every shadow version of
// name, by shadow version.
func (r *Registry) ShadowStats(name string) map[string]ShadowStats {
	e := r.entry(name, false)
	if e == nil {
		return nil
	}
	e.statsMu.Lock()
	defer e.statsMu.Unlock()
	out := make(map[string]ShadowStats, len(e.stats))
	for v, s := range e.stats {
		out[v] = *s
	}
	return out
}

// shadowQueue bounds the copies waiting for their shadow run; past it
// copies are dropped (and counted) rather than slowing live traffic.
const shadowQueue = 64

// shadowRunner runs shadow copies on one goroutine, owned by the registry
// (started on first use, stopped by Registry.Close). Shadow runs go
// through the shadow version's executor, so they share its concurrency
// bound and batching with any direct traffic to it.
type shadowRunner struct {
	reg     *Registry
	mu      sync.Mutex
	started bool
	stopped bool
	q       chan shadowJob
	done    chan struct{}
	wg      sync.WaitGroup
}

type shadowJob struct {
	name   string
	live   string // live version
	s      *Served
	inputs []tensor.Tensor
	out    tensor.Tensor // live answer's first output
}

// submit queues a copy; s is acquired and is released by the runner (or
// here, when the copy is dropped). inputs and out must not be reused by
// the caller.
func (sr *shadowRunner) submit(j shadowJob) {
	sr.mu.Lock()
	if sr.stopped {
		sr.mu.Unlock()
		j.s.Release()
		return
	}
	if !sr.started {
		sr.started = true
		sr.q = make(chan shadowJob, shadowQueue)
		sr.done = make(chan struct{})
		sr.wg.Add(1)
		go sr.loop()
	}
	select {
	case sr.q <- j:
	default:
		sr.reg.recordShadow(j, 0, false, false)
		j.s.Release()
	}
	sr.mu.Unlock()
}

func (sr *shadowRunner) stop() {
	sr.mu.Lock()
	if sr.stopped {
		sr.mu.Unlock()
		return
	}
	sr.stopped = true
	started := sr.started
	sr.mu.Unlock()
	if !started {
		return
	}
	close(sr.done)
	sr.wg.Wait()
	for {
		select {
		case j := <-sr.q:
			j.s.Release()
		default:
			return
		}
	}
}

func (sr *shadowRunner) loop() {
	defer sr.wg.Done()
	for {
		select {
		case <-sr.done:
			return
		case j := <-sr.q:
			sr.run(j)
		}
	}
}

func (sr *shadowRunner) run(j shadowJob) {
	defer j.s.Release()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := j.s.exec.run(ctx, j.inputs)
	if err != nil || len(res.outs) == 0 {
		sr.reg.recordShadow(j, 0, false, false)
		return
	}
	diff, agree, ok := compare(j.out, res.outs[0])
	sr.reg.recordShadow(j, diff, agree, ok)
}

func (r *Registry) recordShadow(j shadowJob, diff float64, agree, ok bool) {
	e := r.entry(j.name, false)
	if e == nil {
		return
	}
	lv := []string{j.name, j.live, j.s.Version}
	e.statsMu.Lock()
	st := e.stats[j.s.Version]
	if st == nil {
		st = &ShadowStats{}
		e.stats[j.s.Version] = st
	}
	if !ok {
		st.Dropped++
		e.statsMu.Unlock()
		r.metrics.shadowDrp.WithLabelValues(lv...).Inc()
		return
	}
	st.Compared++
	st.SumAbsDiff += diff
	if agree {
		st.Agree++
	}
	e.statsMu.Unlock()
	r.metrics.shadowN.WithLabelValues(lv...).Inc()
	r.metrics.shadowDif.WithLabelValues(lv...).Add(diff)
	if agree {
		r.metrics.shadowAgr.WithLabelValues(lv...).Inc()
	}
}

// compare returns the mean absolute difference of two outputs and whether
// their top-1 indices (per row, over the last dimension) agree. ok is
// false when they cannot be compared (different type or size).
func compare(a, b tensor.Tensor) (diff float64, agree, ok bool) {
	if a.DType != b.DType || len(a.Data) != len(b.Data) || !slices.Equal(a.Shape, b.Shape) || a.DType.Size() == 0 {
		return 0, false, false
	}
	av, bv := asFloats(a), asFloats(b)
	if len(av) == 0 {
		return 0, true, true
	}
	sum := 0.0
	for i := range av {
		sum += math.Abs(av[i] - bv[i])
	}
	row := len(av)
	if len(a.Shape) > 0 && a.Shape[len(a.Shape)-1] > 0 {
		row = int(a.Shape[len(a.Shape)-1])
	}
	agree = true
	for off := 0; off+row <= len(av); off += row {
		if argmax(av[off:off+row]) != argmax(bv[off:off+row]) {
			agree = false
		}
	}
	return sum / float64(len(av)), agree, true
}

func argmax(v []float64) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}

// asFloats decodes a fixed-size tensor's elements as float64.
func asFloats(t tensor.Tensor) []float64 {
	d := t.Data
	n := len(d) / t.DType.Size()
	out := make([]float64, n)
	for i := range out {
		switch t.DType {
		case tensor.Fp32:
			out[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(d[4*i:])))
		case tensor.Fp64:
			out[i] = math.Float64frombits(binary.LittleEndian.Uint64(d[8*i:]))
		case tensor.Uint8, tensor.Bool:
			out[i] = float64(d[i])
		case tensor.Int8:
			out[i] = float64(int8(d[i]))
		case tensor.Int16, tensor.Fp16:
			out[i] = float64(int16(binary.LittleEndian.Uint16(d[2*i:])))
		case tensor.Int32:
			out[i] = float64(int32(binary.LittleEndian.Uint32(d[4*i:])))
		case tensor.Int64:
			out[i] = float64(int64(binary.LittleEndian.Uint64(d[8*i:])))
		}
	}
	return out
}
