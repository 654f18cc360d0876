// Package reconcile drives the agent's actual models toward the desired
// state from the control plane, one reconcile at a time, idempotently and
// across restarts. Each reconcile first refreshes the device's trusted TUF
// metadata; for each desired model it then verifies the model's target
// (hashes, length, custom fields) before fetching anything, resumes or starts the chunked download into the
// cache, verifies the artifact, loads it, runs a warm-up inference, and only
// then swaps it in (the old version becomes previous). Any rejection leaves
// the served model untouched and is reported with the failed check.
package reconcile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	goruntime "runtime"
	"sort"
	"sync"
	"time"

	"github.com/starling-edge/starling/agent/cache"
	"github.com/starling-edge/starling/agent/runtime"
	"github.com/starling-edge/starling/agent/serve"
	"github.com/starling-edge/starling/shared/tensor"
	"github.com/starling-edge/starling/shared/trust"
	"github.com/starling-edge/starling/shared/wire"
)

// Fetcher downloads artifact bytes [from, size), handing chunks to sink in
// any order. *uplink.Session implements it.
type Fetcher interface {
	Fetch(ctx context.Context, digest string, size, from int64, sink func(offset int64, data []byte) error) error
}

// Verifier turns a desired model into verified metadata. Refresh runs once
// per reconcile before any Verify; Verify returns the model's verified
// metadata and the signed bytes that describe it (kept in the cache).
// Errors wrap a trust sentinel (trust.Check names the failed check).
// *tufclient.Verifier implements it.
type Verifier interface {
	Refresh(ctx context.Context) error
	Verify(dm wire.DesiredModel) (*trust.ModelMetadata, []byte, error)
}

// Reporter sends reported state and events. *uplink.Session implements it.
type Reporter interface {
	Report(ctx context.Context, rs wire.ReportedState) error
	Event(ctx context.Context, e wire.Event) error
}

// Options configure a Reconciler. Cache, Verifier, Fetcher, Reporter and
// Registry are required.
type Options struct {
	DeviceID     string
	AgentVersion string
	Cache        *cache.Cache
	Verifier     Verifier
	Fetcher      Fetcher
	Reporter     Reporter
	Registry     *serve.Registry
	// EnginePreference orders engines for a format; default ["gotflite"].
	EnginePreference []string
	// LoadOptions are passed to every engine Load.
	LoadOptions runtime.LoadOptions
	// CacheBytes, when > 0, evicts unused versions after each reconcile
	// until artifacts take at most this much (never active or previous).
	CacheBytes int64
	// RetryInterval is how long after a reconcile that left a desired
	// model unapplied for a reason other than its artifact (for example
	// metadata that did not verify, or an unreachable control plane) the
	// same desired state is tried again; default 1m.
	RetryInterval time.Duration
	// Now is the clock for expiry checks; default time.Now.
	Now func() time.Time
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Reconciler applies desired states. Submit may be called from any
// goroutine; Run owns the work.
type Reconciler struct {
	opts Options
	log  *slog.Logger
	wake chan struct{}

	mu         sync.Mutex
	pending    *wire.DesiredState
	cancelCur  context.CancelFunc
	curGen     int64
	generation int64 // last desired generation fully applied
	// retry is the last desired state while one of its models waits for
	// a retry (see Options.RetryInterval); nil otherwise. Run owns it.
	retry    *wire.DesiredState
	applying *wire.DesiredState // the state reconcile is applying; Run owns it
	// refreshErr is the last reconcile's metadata refresh error. Run owns it.
	refreshErr error
}

// New checks opts.
func New(opts Options) (*Reconciler, error) {
	if opts.Cache == nil || opts.Verifier == nil || opts.Fetcher == nil || opts.Reporter == nil || opts.Registry == nil {
		return nil, fmt.Errorf("reconcile.New: Cache, Verifier, Fetcher, Reporter and Registry are required: %w", ErrOptions)
	}
	if opts.EnginePreference == nil {
		opts.EnginePreference = []string{"gotflite"}
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.RetryInterval <= 0 {
		opts.RetryInterval = time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Reconciler{opts: opts, log: opts.Logger.With("component", "reconcile"), wake: make(chan struct{}, 1)}, nil
}

// Submit hands over a desired state; only the latest pending one is kept.
// A state with a different generation than the one being applied cancels
// that reconcile (its download progress stays in the cache). It never
// blocks.
func (r *Reconciler) Submit(ds wire.DesiredState) {
	r.mu.Lock()
	r.pending = &ds
	if r.cancelCur != nil && ds.Generation != r.curGen {
		r.cancelCur()
	}
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Run applies submitted desired states one at a time until ctx ends; it
// returns nil then.
func (r *Reconciler) Run(ctx context.Context) error {
	retryT := time.NewTimer(time.Hour)
	retryT.Stop()
	defer retryT.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.wake:
		case <-retryT.C:
			r.mu.Lock()
			if r.pending == nil && r.retry != nil {
				r.pending = r.retry
			}
			r.mu.Unlock()
		}
		r.mu.Lock()
		ds := r.pending
		r.pending = nil
		if ds == nil {
			r.mu.Unlock()
			continue
		}
		rctx, cancel := context.WithCancel(ctx)
		r.cancelCur, r.curGen = cancel, ds.Generation
		r.mu.Unlock()

		r.retry, r.applying = nil, ds
		r.reconcile(rctx, *ds)
		if r.retry != nil {
			retryT.Reset(r.opts.RetryInterval)
		}

		r.mu.Lock()
		r.cancelCur = nil
		r.mu.Unlock()
		cancel()
	}
}

// Restore serves the cached active version of every model, before any
// network is up. A version that fails to load is logged and its previous
// version tried instead.
func (r *Reconciler) Restore(ctx context.Context) error {
	recs, err := r.opts.Cache.List()
	if err != nil {
		return fmt.Errorf("reconcile.Restore: %w", err)
	}
	byName := map[string]map[string]cache.Record{}
	for _, rec := range recs {
		if rec.State == wire.StateActive || rec.State == wire.StatePrevious {
			if byName[rec.Name] == nil {
				byName[rec.Name] = map[string]cache.Record{}
			}
			byName[rec.Name][rec.State] = rec
		}
	}
	for name, st := range byName {
		var lastErr error
		for _, state := range []string{wire.StateActive, wire.StatePrevious} {
			rec, ok := st[state]
			if !ok {
				continue
			}
			if lastErr = r.loadAndSwap(ctx, rec); lastErr == nil {
				r.log.Info("serving cached model", "model", name, "version", rec.Version, "was", state)
				break
			}
			r.log.Error("cached model failed to load", "model", name, "version", rec.Version, "err", lastErr)
		}
	}
	return nil
}

func (r *Reconciler) reconcile(ctx context.Context, ds wire.DesiredState) {
	r.refreshErr = nil
	if len(ds.Models) > 0 {
		if err := r.opts.Verifier.Refresh(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("trusted metadata not refreshed", "check", trust.Check(err), "err", err)
			r.refreshErr = err
		}
	}
	for _, dm := range ds.Models {
		if ctx.Err() != nil {
			return
		}
		r.apply(ctx, dm)
	}
	if ctx.Err() != nil {
		return
	}
	r.retireUndesired(ds)
	if r.opts.CacheBytes > 0 {
		if dropped, err := r.opts.Cache.Evict(r.opts.CacheBytes); err != nil {
			r.log.Error("evict", "err", err)
		} else if len(dropped) > 0 {
			r.log.Info("evicted unused versions", "count", len(dropped))
		}
	}
	r.mu.Lock()
	r.generation = ds.Generation
	r.mu.Unlock()
	r.report(ctx)
}

// retireUndesired retires what the desired state no longer lists: every
// version of a model name that is gone (unserving it), and unfinished or
// unused versions of listed names. The active and previous versions of a
// listed name stay, so a rejected upgrade keeps the old version serving.
func (r *Reconciler) retireUndesired(ds wire.DesiredState) {
	names, versions := map[string]bool{}, map[string]bool{}
	for _, dm := range ds.Models {
		names[dm.Name] = true
		versions[dm.Name+"\x00"+dm.Version] = true
	}
	recs, err := r.opts.Cache.List()
	if err != nil {
		r.log.Error("list cache", "err", err)
		return
	}
	for _, rec := range recs {
		served := rec.State == wire.StateActive || rec.State == wire.StatePrevious
		switch {
		case versions[rec.Name+"\x00"+rec.Version]:
			continue
		case names[rec.Name] && served:
			continue
		case !served && rec.State != wire.StateFetching && rec.State != wire.StateVerified:
			continue // already retired, rejected or failed
		}
		if rec.State == wire.StateActive {
			r.opts.Registry.Remove(rec.Name)
		}
		if err := r.opts.Cache.Retire(rec.Name, rec.Version); err != nil {
			r.log.Error("retire", "model", rec.Name, "version", rec.Version, "err", err)
			continue
		}
		r.log.Info("retired version no longer desired", "model", rec.Name, "version", rec.Version, "was", rec.State)
	}
}

// apply brings one desired model version to active, or records why not.
func (r *Reconciler) apply(ctx context.Context, dm wire.DesiredModel) {
	if r.refreshErr != nil {
		if old, err := r.opts.Cache.Get(dm.Name, dm.Version); err == nil && old.State == wire.StateActive &&
			r.opts.Registry.Version(dm.Name) == dm.Version {
			return // keeps serving what was verified before
		}
		r.retry = r.lastDesired()
		r.reject(ctx, dm.Name, dm.Version, r.refreshErr)
		return
	}
	md, signed, err := r.opts.Verifier.Verify(dm)
	if err == nil && (md.Name != dm.Name || md.Version != dm.Version) {
		err = fmt.Errorf("signed metadata is for %s:%s, desired state says %s:%s: %w",
			md.Name, md.Version, dm.Name, dm.Version, trust.ErrMalformed)
	}
	if err != nil {
		r.reject(ctx, dm.Name, dm.Version, err)
		return
	}
	if old, err := r.opts.Cache.Get(md.Name, md.Version); err == nil &&
		old.State == wire.StateRejected && bytes.Equal(old.Envelope, signed) {
		return // rejected before for these exact signed bytes; already reported
	}
	rec, err := r.opts.Cache.Put(md, signed)
	if err != nil {
		r.reject(ctx, md.Name, md.Version, err)
		return
	}
	if rec.State == wire.StateActive {
		if r.opts.Registry.Version(rec.Name) != rec.Version {
			if err := r.loadAndSwap(ctx, rec); err != nil {
				r.reject(ctx, rec.Name, rec.Version, err)
			}
		}
		return
	}
	if rec.State == wire.StateFetching {
		from, err := r.opts.Cache.Progress(rec.Digest)
		if err != nil {
			r.reject(ctx, rec.Name, rec.Version, err)
			return
		}
		r.log.Info("fetching model", "model", rec.Name, "version", rec.Version, "from", from, "size", rec.Size)
		r.report(ctx)
		err = r.opts.Fetcher.Fetch(ctx, rec.Digest, rec.Size, from, func(off int64, data []byte) error {
			return r.opts.Cache.PutChunk(rec.Digest, off, data)
		})
		if ctx.Err() != nil {
			return // superseded or stopping; progress is kept for the next attempt
		}
		if err != nil {
			r.retry = r.lastDesired()
			r.reject(ctx, rec.Name, rec.Version, err)
			return
		}
		if rec, err = r.opts.Cache.Complete(rec.Name, rec.Version); err != nil {
			r.reject(ctx, md.Name, md.Version, err)
			return
		}
	}
	if err := r.activate(ctx, rec); err != nil && ctx.Err() == nil {
		r.reject(ctx, rec.Name, rec.Version, err)
	}
}

// lastDesired returns the desired state being applied, for a retry.
func (r *Reconciler) lastDesired() *wire.DesiredState { return r.applying }

// activate loads a verified version and makes it the served one.
func (r *Reconciler) activate(ctx context.Context, rec cache.Record) error {
	if err := r.loadAndSwapThen(ctx, rec, func() error { return r.opts.Cache.Activate(rec.Name, rec.Version) }); err != nil {
		return err
	}
	r.log.Info("model active", "model", rec.Name, "version", rec.Version)
	r.event(ctx, wire.Event{Kind: wire.EventActivated, Model: rec.Name, Version: rec.Version,
		Message: fmt.Sprintf("model %s:%s is active", rec.Name, rec.Version)})
	r.report(ctx)
	return nil
}

func (r *Reconciler) loadAndSwap(ctx context.Context, rec cache.Record) error {
	return r.loadAndSwapThen(ctx, rec, nil)
}

// loadAndSwapThen loads and warms up rec, runs commit (the cache change)
// and only if that succeeds publishes the model to the registry.
func (r *Reconciler) loadAndSwapThen(ctx context.Context, rec cache.Record, commit func() error) error {
	end := r.opts.Registry.BeginLoad()
	defer end()
	m, err := r.load(ctx, rec)
	if err != nil {
		return err
	}
	if commit != nil {
		if err := commit(); err != nil {
			m.Close()
			return err
		}
	}
	r.opts.Registry.Swap(rec.Name, rec.Version, rec.Format, m)
	return nil
}

func (r *Reconciler) load(ctx context.Context, rec cache.Record) (runtime.Model, error) {
	art, err := r.opts.Cache.Artifact(rec.Digest)
	if err != nil {
		return nil, err
	}
	eng, err := runtime.ForFormat(rec.Format, r.opts.EnginePreference...)
	if err != nil {
		return nil, fmt.Errorf("model %s:%s: %v: %w", rec.Name, rec.Version, err, ErrLoad)
	}
	m, err := eng.Load(art, r.opts.LoadOptions)
	if err != nil {
		return nil, fmt.Errorf("model %s:%s: engine %s: %v: %w", rec.Name, rec.Version, eng.Name(), err, ErrLoad)
	}
	if _, err := m.Run(ctx, zeroInputs(m.Signature())); err != nil {
		m.Close()
		return nil, fmt.Errorf("model %s:%s: warm-up run on engine %s: %v: %w", rec.Name, rec.Version, eng.Name(), err, ErrLoad)
	}
	return m, nil
}

// zeroInputs builds all-zero inputs for a signature (dynamic dims as 1).
func zeroInputs(sig runtime.Signature) []tensor.Tensor {
	in := make([]tensor.Tensor, len(sig.Inputs))
	for i, sp := range sig.Inputs {
		shape := make([]int64, len(sp.Shape))
		for j, d := range sp.Shape {
			shape[j] = max(d, 1)
		}
		in[i] = tensor.Tensor{Name: sp.Name, DType: sp.DType, Shape: shape,
			Data: make([]byte, tensor.NumElements(shape)*int64(sp.DType.Size()))}
	}
	return in
}

// reject records and reports a failed version. The served model is not
// touched.
func (r *Reconciler) reject(ctx context.Context, name, version string, err error) {
	check := trust.Check(err)
	if errors.Is(err, ErrLoad) {
		check = CheckLoad
	}
	state, kind := wire.StateRejected, wire.EventRejected
	if check == "" {
		state, kind = wire.StateFailed, wire.EventFailed
	}
	r.log.Warn("model not applied", "model", name, "version", version, "state", state, "check", check, "err", err)
	if name != "" && version != "" {
		if cerr := r.opts.Cache.Reject(name, version, state, check, err.Error()); cerr != nil {
			r.log.Error("record rejection", "err", cerr)
		}
	}
	r.event(ctx, wire.Event{Kind: kind, Model: name, Version: version, Check: check, Message: err.Error()})
	r.report(ctx)
}

func (r *Reconciler) event(ctx context.Context, e wire.Event) {
	e.Time = r.opts.Now().UTC()
	if err := r.opts.Reporter.Event(ctx, e); err != nil && ctx.Err() == nil {
		r.log.Warn("send event", "kind", e.Kind, "err", err)
	}
}

// State returns the reported state as of now.
func (r *Reconciler) State() (wire.ReportedState, error) {
	recs, err := r.opts.Cache.List()
	if err != nil {
		return wire.ReportedState{}, err
	}
	r.mu.Lock()
	gen := r.generation
	r.mu.Unlock()
	rs := wire.ReportedState{
		DeviceID: r.opts.DeviceID, AgentVersion: r.opts.AgentVersion,
		OS: goruntime.GOOS, Arch: goruntime.GOARCH, Engines: runtime.Engines(),
		Generation: gen, Models: []wire.ModelStatus{}, Time: r.opts.Now().UTC(),
	}
	for _, rec := range recs {
		ms := wire.ModelStatus{Name: rec.Name, Version: rec.Version, State: rec.State, Digest: rec.Digest,
			Check: rec.Check, Error: rec.Error}
		if rec.State == wire.StateFetching {
			ms.Size = rec.Size
			ms.Fetched, _ = r.opts.Cache.Progress(rec.Digest)
		}
		rs.Models = append(rs.Models, ms)
	}
	sort.Slice(rs.Models, func(i, j int) bool {
		a, b := rs.Models[i], rs.Models[j]
		return a.Name < b.Name || a.Name == b.Name && a.Version < b.Version
	})
	return rs, nil
}

func (r *Reconciler) report(ctx context.Context) {
	rs, err := r.State()
	if err != nil {
		r.log.Error("build report", "err", err)
		return
	}
	if err := r.opts.Reporter.Report(ctx, rs); err != nil && ctx.Err() == nil {
		r.log.Warn("send report", "err", err)
	}
}

// Report sends the current state (e.g. right after start).
func (r *Reconciler) Report(ctx context.Context) { r.report(ctx) }
