package serve

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the serving layer's Prometheus series, on a registry of
// their own (served at GET /metrics), labelled by model and version.
type metrics struct {
	reg       *prometheus.Registry
	requests  *prometheus.CounterVec
	failures  *prometheus.CounterVec
	queue     *prometheus.HistogramVec
	compute   *prometheus.HistogramVec
	batch     *prometheus.HistogramVec
	depth     *prometheus.GaugeVec
	shadowN   *prometheus.CounterVec
	shadowAgr *prometheus.CounterVec
	shadowDif *prometheus.CounterVec
	shadowDrp *prometheus.CounterVec
}

// latencyBuckets span 10us..2.6s.
var latencyBuckets = prometheus.ExponentialBuckets(10e-6, 2, 19)

func newMetrics() *metrics {
	mv := []string{"model", "version"}
	sv := []string{"model", "version", "shadow_version"}
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "starling_serve_requests_total", Help: "Inference requests answered, by model, version and outcome code (ok or the failure reason).",
		}, []string{"model", "version", "code"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "starling_serve_failures_total", Help: "Inference requests that failed, by reason.",
		}, []string{"model", "version", "reason"}),
		queue: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "starling_serve_queue_seconds", Help: "Time requests waited before their run began.", Buckets: latencyBuckets,
		}, mv),
		compute: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "starling_serve_compute_seconds", Help: "Time of the engine run that answered a request (one per batch).", Buckets: latencyBuckets,
		}, mv),
		batch: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "starling_serve_batch_size", Help: "Rows per engine run (requests per batch when batching).", Buckets: prometheus.ExponentialBuckets(1, 2, 9),
		}, mv),
		depth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "starling_serve_queue_depth", Help: "Requests waiting to run.",
		}, mv),
		shadowN: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "starling_serve_shadow_compared_total", Help: "Live requests whose copy the shadow version answered and that were compared.",
		}, sv),
		shadowAgr: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "starling_serve_shadow_top1_agree_total", Help: "Compared requests whose first output's top-1 index matched the live answer.",
		}, sv),
		shadowDif: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "starling_serve_shadow_abs_diff_sum", Help: "Sum over compared requests of the mean absolute difference of the first output (divide by compared_total for the mean).",
		}, sv),
		shadowDrp: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "starling_serve_shadow_dropped_total", Help: "Shadow copies dropped because the shadow queue was full or the shadow run failed.",
		}, sv),
	}
	m.reg.MustRegister(m.requests, m.failures, m.queue, m.compute, m.batch, m.depth,
		m.shadowN, m.shadowAgr, m.shadowDif, m.shadowDrp,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// versionMetrics are one version's series, resolved once so the hot path
// does no label lookups.
type versionMetrics struct {
	ok      prometheus.Counter
	queue   prometheus.Observer
	compute prometheus.Observer
	batch   prometheus.Observer
	depth   prometheus.Gauge
}

func (m *metrics) forVersion(model, version string) *versionMetrics {
	return &versionMetrics{
		ok:      m.requests.WithLabelValues(model, version, "ok"),
		queue:   m.queue.WithLabelValues(model, version),
		compute: m.compute.WithLabelValues(model, version),
		batch:   m.batch.WithLabelValues(model, version),
		depth:   m.depth.WithLabelValues(model, version),
	}
}

// fail counts a failed request.
func (m *metrics) fail(model, version string, err error) {
	r := reasonOf(err)
	m.requests.WithLabelValues(model, version, r).Inc()
	m.failures.WithLabelValues(model, version, r).Inc()
}

// drop removes a retired version's gauge (its counters stay, so rates
// over a swap stay right).
func (m *metrics) drop(model, version string) {
	m.depth.DeleteLabelValues(model, version)
}
