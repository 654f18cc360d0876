package serve

import (
	"context"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/starling-edge/starling/agent/runtime"
)

// Registry holds the served versions of each model name and the routes
// between them. Every change publishes a new immutable snapshot at once;
// requests that already hold a version finish on it, and a retired version
// is closed when the last of them releases it. So a swap never fails an
// in-flight request.
type Registry struct {
	mu      sync.RWMutex // guards models and opts, not the snapshots
	models  map[string]*entry
	opts    map[string]ModelOptions
	loading atomic.Int32
	metrics *metrics
	log     atomic.Pointer[slog.Logger]

	shadow shadowRunner
}

type entry struct {
	name string
	wmu  sync.Mutex // serialises writers of snap
	snap atomic.Pointer[snapshot]

	statsMu sync.Mutex
	stats   map[string]*ShadowStats // by shadow version
}

// snapshot is one immutable view of a model name.
type snapshot struct {
	active   string // the version Swap made active ("stable")
	versions map[string]*Served
	routes   Routes
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	r := &Registry{models: map[string]*entry{}, opts: map[string]ModelOptions{}, metrics: newMetrics()}
	r.log.Store(slog.Default())
	r.shadow.reg = r
	return r
}

// SetLogger sets the logger of load and shadow messages.
func (r *Registry) SetLogger(l *slog.Logger) {
	if l != nil {
		r.log.Store(l)
	}
}

// Served is one loaded model version.
type Served struct {
	Name     string
	Version  string
	Platform string // artifact format, e.g. "tflite"
	Model    runtime.Model

	exec *executor
	reg  *Registry

	mu      sync.Mutex
	refs    int
	retired bool
	closed  bool
}

// Signature is the signature clients see: the model's, with dimension 0
// dynamic when requests are batched.
func (s *Served) Signature() runtime.Signature { return s.exec.sig }

func (s *Served) acquire() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.retired {
		return false
	}
	s.refs++
	return true
}

// Release ends a use begun by Registry.Acquire.
func (s *Served) Release() {
	s.mu.Lock()
	s.refs--
	idle := s.idleLocked()
	s.mu.Unlock()
	if idle {
		s.close()
	}
}

func (s *Served) retire() {
	s.mu.Lock()
	s.retired = true
	idle := s.idleLocked()
	s.mu.Unlock()
	if idle {
		s.close()
	}
}

// idleLocked needs s.mu held. It reports (once) that s is retired and
// unused, so the caller must close it.
func (s *Served) idleLocked() bool {
	if s.retired && s.refs == 0 && !s.closed {
		s.closed = true
		return true
	}
	return false
}

// close stops the executor (a batch in flight finishes first) and closes
// the model. It runs on the goroutine of the last user, after its answer.
func (s *Served) close() {
	s.exec.close()
	s.reg.metrics.drop(s.Name, s.Version)
}

// Configure sets how name is served. Routes apply at once; concurrency,
// queue and batching apply to versions loaded afterwards.
func (r *Registry) Configure(name string, o ModelOptions) error {
	if err := o.Validate(); err != nil {
		return fmt.Errorf("serve: model %q: %w", name, err)
	}
	r.mu.Lock()
	r.opts[name] = o
	e := r.models[name]
	r.mu.Unlock()
	if e != nil {
		e.wmu.Lock()
		old := e.snap.Load()
		e.snap.Store(&snapshot{active: old.active, versions: old.versions, routes: o.Routes})
		e.wmu.Unlock()
	}
	return nil
}

func (r *Registry) options(name string) ModelOptions {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.opts[name]
}

func (r *Registry) entry(name string, create bool) *entry {
	r.mu.RLock()
	e := r.models[name]
	r.mu.RUnlock()
	if e != nil || !create {
		return e
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if e = r.models[name]; e == nil {
		e = &entry{name: name, stats: map[string]*ShadowStats{}}
		e.snap.Store(&snapshot{versions: map[string]*Served{}, routes: r.opts[name].Routes})
		r.models[name] = e
	}
	return e
}

// Swap serves m as name's active version, retiring the version it
// replaces (unless a route still names it). It warms m up first, so the
// old version answers until the new one is ready. A warm-up failure keeps
// the old version and closes m.
func (r *Registry) Swap(name, version, platform string, m runtime.Model) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := r.Load(ctx, name, version, platform, m, true); err != nil {
		r.log.Load().Error("model not swapped in", "model", name, "version", version, "err", err)
	}
}

// Load prepares m (executor, warm-up) and publishes it as name:version.
// With activate it becomes the active ("stable") version and the previous
// active one is retired unless a route names it; without, it is added
// beside the others (e.g. a canary or shadow candidate) and becomes active
// only if there is none. On error m is closed and nothing changes.
func (r *Registry) Load(ctx context.Context, name, version, platform string, m runtime.Model, activate bool) error {
	o := r.options(name).withDefaults()
	ex, err := newExecutor(name, version, m, o, r.metrics.forVersion(name, version))
	if err != nil {
		m.Close()
		return err
	}
	if err := ex.warm(ctx); err != nil {
		ex.close()
		return err
	}
	s := &Served{Name: name, Version: version, Platform: platform, Model: m, exec: ex, reg: r}
	e := r.entry(name, true)
	e.wmu.Lock()
	old := e.snap.Load()
	next := &snapshot{active: old.active, versions: maps.Clone(old.versions), routes: old.routes}
	replaced := next.versions[version]
	next.versions[version] = s
	var retire []*Served
	if replaced != nil {
		retire = append(retire, replaced)
	}
	if activate || next.active == "" {
		prev := next.active
		next.active = version
		if prev != "" && prev != version && !next.routes.names(prev) {
			retire = append(retire, next.versions[prev])
			delete(next.versions, prev)
		}
	}
	e.snap.Store(next)
	e.wmu.Unlock()
	for _, x := range retire {
		x.retire()
	}
	return nil
}

// names reports whether a label, split or shadow route names version v.
func (rt Routes) names(v string) bool {
	if rt.Shadow == v {
		return true
	}
	for _, lv := range rt.Labels {
		if lv == v {
			return true
		}
	}
	for _, s := range rt.Split {
		if s.Target == v {
			return true
		}
	}
	return false
}

// RemoveVersion stops serving name:version. Removing the active version
// leaves name without one until the next Swap; requests that name no
// version then get 404.
func (r *Registry) RemoveVersion(name, version string) {
	e := r.entry(name, false)
	if e == nil {
		return
	}
	e.wmu.Lock()
	old := e.snap.Load()
	s := old.versions[version]
	if s == nil {
		e.wmu.Unlock()
		return
	}
	next := &snapshot{active: old.active, versions: maps.Clone(old.versions), routes: old.routes}
	delete(next.versions, version)
	if next.active == version {
		next.active = ""
	}
	e.snap.Store(next)
	e.wmu.Unlock()
	s.retire()
}

// Remove stops serving name.
func (r *Registry) Remove(name string) {
	r.mu.Lock()
	e := r.models[name]
	delete(r.models, name)
	r.mu.Unlock()
	if e != nil {
		e.wmu.Lock()
		old := e.snap.Swap(&snapshot{versions: map[string]*Served{}})
		e.wmu.Unlock()
		for _, s := range old.versions {
			s.retire()
		}
	}
}

// Acquire returns name's active version for one use; the caller must call
// Release on it. ok is false when name is not served.
func (r *Registry) Acquire(name string) (s *Served, ok bool) {
	s, _, err := r.route(name, "", "", "")
	return s, err == nil
}

// acquireFrom resolves target (a version, else a label) in e and acquires
// it, retrying on a snapshot that changed under it.
func (e *entry) acquireFrom(pick func(*snapshot) (*Served, error)) (*Served, *snapshot, error) {
	for {
		snap := e.snap.Load()
		s, err := pick(snap)
		if err != nil {
			return nil, nil, err
		}
		if s.acquire() {
			return s, snap, nil
		}
		// Retired between Load and acquire: its successor is already
		// published, so load again.
	}
}

// resolve finds a label or version in snap: a served version of that name
// first, then a label ("stable" defaults to the active version).
func (snap *snapshot) resolve(t string) *Served {
	if s := snap.versions[t]; s != nil {
		return s
	}
	return snap.label(t)
}

func (snap *snapshot) label(l string) *Served {
	if v, ok := snap.routes.Labels[l]; ok {
		return snap.versions[v]
	}
	if l == "stable" {
		return snap.versions[snap.active]
	}
	return nil
}

// route picks the version that answers a request for name naming version
// or label (or neither; key then places it in the A/B split), and the
// shadow version that gets a copy, if any. Both are acquired; the caller
// releases them.
func (r *Registry) route(name, version, label, key string) (primary, shadow *Served, err error) {
	e := r.entry(name, false)
	if e == nil {
		return nil, nil, fmt.Errorf("model %q is not served here (served: %v): %w", name, r.Names(), ErrNotFound)
	}
	primary, snap, err := e.acquireFrom(func(snap *snapshot) (*Served, error) {
		switch {
		case version != "":
			if s := snap.resolve(version); s != nil {
				return s, nil
			}
			return nil, fmt.Errorf("model %q has no version or label %q (serving %v): %w", name, version, snap.list(), ErrNotFound)
		case label != "":
			if s := snap.label(label); s != nil {
				return s, nil
			}
			return nil, fmt.Errorf("model %q has no label %q (labels: %v): %w", name, label, snap.labels(), ErrNotFound)
		}
		if len(snap.routes.Split) > 0 {
			b := bucket(key)
			for _, sp := range snap.routes.Split {
				if b < sp.Percent {
					if s := snap.resolve(sp.Target); s != nil {
						return s, nil
					}
					break
				}
				b -= sp.Percent
			}
		}
		if s := snap.versions[snap.active]; s != nil {
			return s, nil
		}
		return nil, fmt.Errorf("model %q has no active version (serving %v): %w", name, snap.list(), ErrNotFound)
	})
	if err != nil {
		return nil, nil, err
	}
	if t := snap.routes.Shadow; t != "" {
		if s := snap.resolve(t); s != nil && s != primary && s.acquire() {
			shadow = s
		}
	}
	return primary, shadow, nil
}

// bucket places a request in 0..99: by its key when it has one, so one
// caller's requests stay on one side of a split, else at random.
func bucket(key string) int {
	if key == "" {
		return rand.IntN(100)
	}
	h := fnv.New32a()
	h.Write([]byte(key))
	return int(h.Sum32() % 100)
}

func (snap *snapshot) list() []string {
	return slices.Sorted(maps.Keys(snap.versions))
}

func (snap *snapshot) labels() []string {
	ls := slices.Sorted(maps.Keys(snap.routes.Labels))
	if _, ok := snap.routes.Labels["stable"]; !ok && snap.active != "" {
		ls = append(ls, "stable")
	}
	return ls
}

// Version returns the active version of name, or "".
func (r *Registry) Version(name string) string {
	e := r.entry(name, false)
	if e == nil {
		return ""
	}
	snap := e.snap.Load()
	if snap.versions[snap.active] == nil {
		return ""
	}
	return snap.active
}

// Versions lists the served versions of name, sorted.
func (r *Registry) Versions(name string) []string {
	e := r.entry(name, false)
	if e == nil {
		return nil
	}
	return e.snap.Load().list()
}

// Names lists the served model names, sorted.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.models))
	for n, e := range r.models {
		if len(e.snap.Load().versions) > 0 {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// BeginLoad marks a model load in progress (the server is not ready while
// one is) and returns the function that ends it.
func (r *Registry) BeginLoad() (end func()) {
	r.loading.Add(1)
	var once sync.Once
	return func() { once.Do(func() { r.loading.Add(-1) }) }
}

// Ready is the readiness rule of GET /v2/health/ready: at least one model
// is served and no load is in progress.
func (r *Registry) Ready() bool {
	return r.loading.Load() == 0 && len(r.Names()) > 0
}

// Close retires every served model (each closes once its last request
// ends) and stops the shadow runner.
func (r *Registry) Close() {
	r.mu.Lock()
	es := r.models
	r.models = map[string]*entry{}
	r.mu.Unlock()
	for _, e := range es {
		e.wmu.Lock()
		old := e.snap.Swap(&snapshot{versions: map[string]*Served{}})
		e.wmu.Unlock()
		for _, s := range old.versions {
			s.retire()
		}
	}
	r.shadow.stop()
}
