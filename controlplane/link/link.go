// Package link is the control plane's MQTT session with the fleet. It is an
// ordinary client of the broker (the embedded one or an external one, same
// code): it registers devices from their status and reported messages,
// keeps their event history, answers chunked artifact fetches, and publishes
// each device's desired state as a retained message.
package link

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/starling-edge/starling/controlplane/store"
	"github.com/starling-edge/starling/shared/wire"
)

// FetchHook is called before each fetch request is answered. Returning false
// drops the request unanswered; it may sleep to delay the answer. It exists
// for fault injection in tests and runs on a fetch worker.
type FetchHook func(deviceID string, req wire.FetchRequest) bool

// Options configures a Link.
type Options struct {
	// BrokerURL is "mqtt://host:port" (or "tcp://host:port"), or
	// "mqtts://host:port" for TLS. Required.
	BrokerURL string
	// TLSConfig is used for an mqtts:// broker: the control plane's
	// client certificate and the CA that signed the broker's.
	TLSConfig *tls.Config
	// ClientID is the MQTT client id; default "starling-control". The session
	// is persistent (clean session false), so it must be stable across
	// restarts and distinct per control-plane process.
	ClientID string
	// Store and Artifacts are required.
	Store     store.Store
	Artifacts *store.Artifacts
	// FetchHook, if set, runs before each fetch answer (see FetchHook).
	FetchHook FetchHook
	// Metadata serves TUF metadata files to devices (meta/req). Without
	// it every request is answered "not found".
	Metadata MetadataSource
	// MetadataHook, if set, runs before each metadata answer: when it
	// returns ok, its data is served instead. For tests (an attacker
	// that controls what the control plane serves).
	MetadataHook func(deviceID, name string) (data []byte, ok bool)
	// FetchWorkers answer fetch requests; default 4. Each holds at most one
	// chunk (wire.MaxChunk bytes) in memory.
	FetchWorkers int
	// FetchQueue bounds requests waiting for a worker; default 64. A request
	// that finds the queue full is dropped and logged; the agent asks again.
	FetchQueue int
	// PublishTimeout bounds the wait for a broker acknowledgement; default 10s.
	PublishTimeout time.Duration
	// RetryInterval is how often desired states the broker has not
	// acknowledged are published again (besides after every reconnect);
	// default 30s. Each pass reads every device from the store.
	RetryInterval time.Duration
	// ConnectTimeout bounds the first connection in Start; default 10s.
	ConnectTimeout time.Duration
	// Logger default: discard.
	Logger *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// maxPayload bounds the JSON bodies the link accepts from devices.
const maxPayload = 256 << 10

// Link is a running MQTT session. Its methods are safe for concurrent use.
type Link struct {
	opts   Options
	log    *slog.Logger
	client paho.Client

	ctx    context.Context // cancelled by Close; stops workers
	cancel context.CancelFunc
	wg     sync.WaitGroup
	fetchQ chan fetchJob

	subscribed chan struct{} // closed after the first successful subscribe
	subOnce    sync.Once

	// desiredMu orders desired-state writes and publishes, so the retained
	// message always carries the newest generation.
	desiredMu sync.Mutex
}

type fetchJob struct {
	deviceID string
	req      wire.FetchRequest
	meta     *wire.MetadataRequest // set for a metadata request
}

// New checks opts and prepares a Link; Start connects it.
func New(opts Options) (*Link, error) {
	if opts.Store == nil {
		return nil, fmt.Errorf("%w: Store is required", ErrOptions)
	}
	if opts.Artifacts == nil {
		return nil, fmt.Errorf("%w: Artifacts is required", ErrOptions)
	}
	server, err := PahoServer(opts.BrokerURL)
	if err != nil {
		return nil, fmt.Errorf("%w: BrokerURL: %v", ErrOptions, err)
	}
	if opts.ClientID == "" {
		opts.ClientID = "starling-control"
	}
	if opts.FetchWorkers <= 0 {
		opts.FetchWorkers = 4
	}
	if opts.FetchQueue <= 0 {
		opts.FetchQueue = 64
	}
	if opts.PublishTimeout <= 0 {
		opts.PublishTimeout = 10 * time.Second
	}
	if opts.RetryInterval <= 0 {
		opts.RetryInterval = 30 * time.Second
	}
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &Link{
		opts:       opts,
		log:        opts.Logger,
		ctx:        ctx,
		cancel:     cancel,
		fetchQ:     make(chan fetchJob, opts.FetchQueue),
		subscribed: make(chan struct{}),
	}
	co := paho.NewClientOptions().
		AddBroker(server).
		SetClientID(opts.ClientID).
		SetCleanSession(false).
		SetAutoReconnect(true).
		SetConnectRetry(false).
		SetMaxReconnectInterval(10 * time.Second).
		SetKeepAlive(30 * time.Second).
		SetConnectTimeout(opts.ConnectTimeout).
		SetWriteTimeout(opts.PublishTimeout).
		SetOrderMatters(true). // handlers are quick; fetches go to the pool
		SetDefaultPublishHandler(l.route).
		SetOnConnectHandler(l.onConnect).
		SetTLSConfig(opts.TLSConfig).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			l.log.Warn("mqtt connection lost; reconnecting", "broker", opts.BrokerURL, "err", err)
		})
	l.client = paho.NewClient(co)
	return l, nil
}

// PahoServer turns "mqtt://host:port" or "tcp://host:port" (or
// "mqtts://host:port" for TLS) into the form the paho client dials.
func PahoServer(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("%q: %v", raw, err)
	}
	if u.Scheme != "mqtt" && u.Scheme != "tcp" && u.Scheme != "mqtts" {
		return "", fmt.Errorf("%q: scheme must be mqtts://, mqtt:// or tcp://", raw)
	}
	if u.Hostname() == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return "", fmt.Errorf("%q: want mqtt://host:port", raw)
	}
	if u.Scheme == "mqtts" {
		return "ssl://" + u.Host, nil
	}
	return "tcp://" + u.Host, nil
}

// Start connects and subscribes; it returns once the device topics are
// subscribed, or with an error wrapping ErrConnect.
func (l *Link) Start(ctx context.Context) error {
	for range l.opts.FetchWorkers {
		l.wg.Go(l.fetchWorker)
	}
	l.wg.Go(l.retryLoop)
	tok := l.client.Connect()
	if !tok.WaitTimeout(l.opts.ConnectTimeout) {
		return fmt.Errorf("%w %s: no answer within %s", ErrConnect, l.opts.BrokerURL, l.opts.ConnectTimeout)
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("%w %s: %v", ErrConnect, l.opts.BrokerURL, err)
	}
	select {
	case <-l.subscribed:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(l.opts.ConnectTimeout):
		return fmt.Errorf("%w %s: subscribing to device topics timed out", ErrConnect, l.opts.BrokerURL)
	}
}

// Close stops the fetch workers and disconnects. Safe to call more than once.
func (l *Link) Close() error {
	l.cancel()
	l.wg.Wait()
	if l.client.IsConnectionOpen() {
		l.client.Disconnect(250)
	}
	return nil
}

// retryLoop publishes desired states that are still unacknowledged, in
// case the publish after the last reconnect failed too.
func (l *Link) retryLoop() {
	t := time.NewTicker(l.opts.RetryInterval)
	defer t.Stop()
	for {
		select {
		case <-l.ctx.Done():
			return
		case <-t.C:
			if !l.client.IsConnectionOpen() {
				continue
			}
			if err := l.RepublishDesired(l.ctx, false); err != nil && !errors.Is(err, context.Canceled) {
				l.log.Warn("re-publishing pending desired states", "err", err)
			}
		}
	}
}

// subscriptions are the device topics the control plane listens to.
func (l *Link) subscriptions() map[string]byte {
	filters := map[string]byte{}
	for _, name := range []string{wire.Status, wire.Reported, wire.Events, wire.FetchReq, wire.MetaReq} {
		filters[wire.DeviceTopic("+", name)] = 1
	}
	return filters
}

// onConnect runs on its own goroutine after every (re)connection: it
// (re)subscribes (harmless with a persistent session) and publishes any
// desired state the broker has not acknowledged yet.
func (l *Link) onConnect(c paho.Client) {
	tok := c.SubscribeMultiple(l.subscriptions(), nil)
	if !tok.WaitTimeout(l.opts.PublishTimeout) || tok.Error() != nil {
		l.log.Error("subscribe to device topics failed; dropping the connection to retry", "err", tok.Error())
		// Reconnecting resubscribes; a session without subscriptions would
		// silently miss every device.
		go c.Disconnect(0)
		return
	}
	l.subOnce.Do(func() { close(l.subscribed) })
	if err := l.RepublishDesired(l.ctx, false); err != nil && !errors.Is(err, context.Canceled) {
		l.log.Warn("re-publishing pending desired states", "err", err)
	}
}

// route dispatches a message from a device topic. It runs on paho's
// delivery goroutine: nothing here may block for long.
func (l *Link) route(_ paho.Client, m paho.Message) {
	id, name, ok := wire.ParseDeviceTopic(m.Topic())
	if !ok || !wire.ValidDeviceID(id) {
		l.log.Warn("dropping message on malformed device topic", "topic", m.Topic())
		return
	}
	if len(m.Payload()) > maxPayload && name != wire.FetchReq && name != wire.MetaReq {
		l.log.Warn("dropping oversized message", "device", id, "topic", name, "bytes", len(m.Payload()))
		return
	}
	var err error
	switch name {
	case wire.Status:
		err = l.handleStatus(id, m.Payload(), m.Retained())
	case wire.Reported:
		err = l.handleReported(id, m.Payload(), m.Retained())
	case wire.Events:
		err = l.handleEvent(id, m.Payload())
	case wire.FetchReq:
		err = l.enqueueFetch(id, m.Payload())
	case wire.MetaReq:
		err = l.enqueueMetadata(id, m.Payload())
	default:
		return // not a topic the control plane consumes
	}
	if err != nil {
		l.log.Warn("dropping device message", "device", id, "topic", name, "err", err)
	}
}
