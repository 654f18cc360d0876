package serve

import (
	"sort"
	"sync"
	"sync/atomic"

	"github.com/starling-edge/starling/agent/runtime"
)

// Registry holds the served model of each name behind an atomic pointer.
// A swap publishes the new version at once; requests that already hold the
// old one finish on it, and the old model is closed when the last of them
// releases it. So a swap never fails an in-flight request.
type Registry struct {
	mu      sync.RWMutex // guards the map, not the pointers in it
	models  map[string]*atomic.Pointer[Served]
	loading atomic.Int32
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{models: map[string]*atomic.Pointer[Served]{}}
}

// Served is one loaded model version.
type Served struct {
	Name     string
	Version  string
	Platform string // artifact format, e.g. "tflite"
	Model    runtime.Model

	mu      sync.Mutex
	refs    int
	retired bool
	closed  bool
}

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
	defer s.mu.Unlock()
	s.refs--
	s.closeIfIdleLocked()
}

func (s *Served) retire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.retired = true
	s.closeIfIdleLocked()
}

// closeIfIdleLocked needs s.mu held.
func (s *Served) closeIfIdleLocked() {
	if s.retired && s.refs == 0 && !s.closed {
		s.closed = true
		s.Model.Close()
	}
}

// Swap serves m as name's version, retiring the version it replaces.
func (r *Registry) Swap(name, version, platform string, m runtime.Model) {
	r.mu.Lock()
	p := r.models[name]
	if p == nil {
		p = new(atomic.Pointer[Served])
		r.models[name] = p
	}
	r.mu.Unlock()
	if old := p.Swap(&Served{Name: name, Version: version, Platform: platform, Model: m}); old != nil {
		old.retire()
	}
}

// Remove stops serving name.
func (r *Registry) Remove(name string) {
	r.mu.Lock()
	p := r.models[name]
	delete(r.models, name)
	r.mu.Unlock()
	if p != nil {
		if old := p.Swap(nil); old != nil {
			old.retire()
		}
	}
}

// Acquire returns name's served version for one use; the caller must call
// Release on it. ok is false when name is not served.
func (r *Registry) Acquire(name string) (s *Served, ok bool) {
	r.mu.RLock()
	p := r.models[name]
	r.mu.RUnlock()
	if p == nil {
		return nil, false
	}
	for {
		s = p.Load()
		if s == nil {
			return nil, false
		}
		if s.acquire() {
			return s, true
		}
		// Retired between Load and acquire: its successor is already
		// published, so load again.
	}
}

// Version returns the version served under name, or "".
func (r *Registry) Version(name string) string {
	s, ok := r.Acquire(name)
	if !ok {
		return ""
	}
	defer s.Release()
	return s.Version
}

// Names lists the served model names, sorted.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.models))
	for n, p := range r.models {
		if p.Load() != nil {
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

// Close retires every served model; each closes once its last request ends.
func (r *Registry) Close() {
	r.mu.Lock()
	ps := r.models
	r.models = map[string]*atomic.Pointer[Served]{}
	r.mu.Unlock()
	for _, p := range ps {
		if old := p.Swap(nil); old != nil {
			old.retire()
		}
	}
}
