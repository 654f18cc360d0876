package serve

import (
	"fmt"
	"runtime"
	"slices"
	"time"
)

// ModelOptions configure how one model name is served. The zero value
// serves without batching, with GOMAXPROCS concurrent runs, a queue of 64
// and no allow list.
type ModelOptions struct {
	// Concurrency is how many inferences (or batches) of one version run
	// at once; default GOMAXPROCS. Each costs one engine executor's memory.
	Concurrency int `yaml:"concurrency"`
	// QueueSize bounds the requests of one version waiting to run; past it
	// requests get 429 / RESOURCE_EXHAUSTED with a Retry-After hint.
	// Default 64.
	QueueSize int `yaml:"queue_size"`
	// Timeout is the deadline of a request that brings none; 0 means
	// none. A request still queued at its deadline is dropped, never run.
	Timeout time.Duration `yaml:"timeout"`
	// Batching, when set, groups concurrent requests into one run. It is
	// used only where the model's batch dimension allows it (every input
	// and output has dimension 0 dynamic, or static and > 1).
	Batching *Batching `yaml:"batching"`
	// Allow restricts who may call the model; empty allows every caller
	// that can open the socket.
	Allow Allow `yaml:"allow"`
	// Routes configure labels, A/B splits and shadow runs.
	Routes Routes `yaml:"routes"`
}

// Batching configures dynamic batching of one model.
type Batching struct {
	// MaxBatchSize is the most rows one run takes; default the model's
	// static batch dimension, or 8 when it is dynamic.
	MaxBatchSize int `yaml:"max_batch_size"`
	// MaxQueueDelay is how long the first request of a batch waits for
	// more; default 1ms. It is added to a lone request's latency.
	MaxQueueDelay time.Duration `yaml:"max_queue_delay"`
	// AllowedBatchSizes lists the batch sizes the model accepts; a batch
	// is padded (with zeros, answers discarded) up to the next one.
	// Default: the powers of two below MaxBatchSize and MaxBatchSize
	// itself for a dynamic batch dimension, the static size otherwise.
	AllowedBatchSizes []int `yaml:"allowed_batch_sizes"`
}

// Allow is a per-model allow list of unix socket callers, identified by
// the kernel (SO_PEERCRED). A caller is allowed when its uid is in UIDs or
// its primary gid is in GIDs. Callers over TCP have no identity and are
// refused by any non-empty list.
type Allow struct {
	UIDs []uint32 `yaml:"uids"`
	GIDs []uint32 `yaml:"gids"`
}

// Empty reports whether the list allows everyone.
func (a Allow) Empty() bool { return len(a.UIDs) == 0 && len(a.GIDs) == 0 }

// Routes say which served version answers a request.
//
// A request names a version, a label, or neither. A version is served as
// is; a label is looked up in Labels ("stable" defaults to the version the
// reconciler made active); neither goes through Split, and otherwise to
// the active version. Shadow names a label or version that gets a copy of
// every live request answered by another version; its answers are
// discarded and only compared.
type Routes struct {
	// Labels maps a label (e.g. "canary") to a served version.
	Labels map[string]string `yaml:"labels"`
	// Split sends a percentage of unlabelled traffic to a label or
	// version; the rest goes to the active version. A request with an id
	// always lands on the same side.
	Split []Split `yaml:"split"`
	// Shadow is a label or version that shadows live traffic.
	Shadow string `yaml:"shadow"`
}

// Split is one A/B share.
type Split struct {
	Target  string `yaml:"target"`  // label or version
	Percent int    `yaml:"percent"` // 0..100
}

// Validate checks the options; errors name the field.
func (o ModelOptions) Validate() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%s: %s: %w", field, fmt.Sprintf(format, args...), ErrOptions)
	}
	if o.Concurrency < 0 {
		return bad("concurrency", "%d is negative", o.Concurrency)
	}
	if o.QueueSize < 0 {
		return bad("queue_size", "%d is negative", o.QueueSize)
	}
	if o.Timeout < 0 {
		return bad("timeout", "%v is negative", o.Timeout)
	}
	if b := o.Batching; b != nil {
		if b.MaxBatchSize < 0 {
			return bad("batching.max_batch_size", "%d is negative", b.MaxBatchSize)
		}
		if b.MaxQueueDelay < 0 {
			return bad("batching.max_queue_delay", "%v is negative", b.MaxQueueDelay)
		}
		for _, n := range b.AllowedBatchSizes {
			if n <= 0 {
				return bad("batching.allowed_batch_sizes", "%d is not positive", n)
			}
		}
	}
	total := 0
	for i, s := range o.Routes.Split {
		if s.Target == "" {
			return bad(fmt.Sprintf("routes.split[%d].target", i), "empty; name a label or version")
		}
		if s.Percent < 0 || s.Percent > 100 {
			return bad(fmt.Sprintf("routes.split[%d].percent", i), "%d is outside 0..100", s.Percent)
		}
		total += s.Percent
	}
	if total > 100 {
		return bad("routes.split", "percentages add up to %d, over 100", total)
	}
	for l, v := range o.Routes.Labels {
		if l == "" || v == "" {
			return bad("routes.labels", "label %q -> version %q: both must be set", l, v)
		}
	}
	return nil
}

// withDefaults fills in defaults.
func (o ModelOptions) withDefaults() ModelOptions {
	if o.Concurrency == 0 {
		o.Concurrency = runtime.GOMAXPROCS(0)
	}
	if o.QueueSize == 0 {
		o.QueueSize = 64
	}
	if o.Batching != nil {
		b := *o.Batching
		b.AllowedBatchSizes = slices.Clone(b.AllowedBatchSizes)
		slices.Sort(b.AllowedBatchSizes)
		if b.MaxQueueDelay == 0 {
			b.MaxQueueDelay = time.Millisecond
		}
		o.Batching = &b
	}
	return o
}
