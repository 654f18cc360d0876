// Package store keeps the control plane's state: the model registry, the
// device registry with each device's desired and reported state, and a
// bounded history of device events. Store is the boundary; Bolt is the
// embedded implementation that needs no server (a PostgreSQL implementation
// can sit behind the same interface). Artifact bytes live beside the store
// as content-addressed files (see Artifacts), never inside it.
package store

import (
	"context"
	"encoding/json"
	"time"

	"github.com/starling-edge/starling/shared/wire"
)

// Model is one published model version: the fields of its signed metadata
// that the registry indexes, plus the signed envelope itself, byte for byte.
type Model struct {
	Name    string    `json:"name"`
	Version string    `json:"version"`
	Digest  string    `json:"digest"` // "sha256:<hex>"
	Size    int64     `json:"size"`
	Format  string    `json:"format"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
	// Metadata is the operator-signed envelope (trust.Envelope JSON). The
	// control plane forwards it untouched; it cannot make a new one.
	Metadata json.RawMessage `json:"metadata"`
	// Published is when the control plane first stored this version.
	Published time.Time `json:"published"`
}

// ModelRef names one model version.
type ModelRef struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

// Device status values.
const (
	StatusOnline  = wire.Online
	StatusOffline = wire.Offline
)

// Device is one registered device.
type Device struct {
	ID         string    `json:"id"`
	Registered time.Time `json:"registered"`
	Status     string    `json:"status"` // StatusOnline or StatusOffline
	LastSeen   time.Time `json:"last_seen"`
	// Reported is the device's latest ReportedState; nil until it reports.
	Reported *wire.ReportedState `json:"reported,omitempty"`
	// Desired is what the device should run; nil until first set.
	Desired *wire.DesiredState `json:"desired,omitempty"`
	// PublishedGeneration is the newest desired generation the broker has
	// acknowledged. When it is behind Desired.Generation the desired state
	// still has to be published (for example after a broker outage).
	PublishedGeneration int64 `json:"published_generation"`
}

// Models is the model registry.
type Models interface {
	// PutModel stores a model version. Storing the same name and version
	// again with the same digest changes nothing and returns created=false;
	// with a different digest it returns ErrConflict.
	PutModel(ctx context.Context, m Model) (created bool, err error)
	// GetModel returns one version or ErrNotFound.
	GetModel(ctx context.Context, name, version string) (Model, error)
	// ListModels returns every version, ordered by name then version.
	ListModels(ctx context.Context) ([]Model, error)
}

// Devices is the device registry.
type Devices interface {
	// GetDevice returns one device or ErrNotFound.
	GetDevice(ctx context.Context, id string) (Device, error)
	// ListDevices returns every device ordered by id.
	ListDevices(ctx context.Context) ([]Device, error)
	// UpdateDevice runs fn on the stored device inside one transaction and
	// stores the result. If the device does not exist it is created (fn sees
	// a Device with only ID set) when create is true, and ErrNotFound is
	// returned otherwise. fn may return ErrNoChange to store nothing, or any
	// other error to abort. IMPORTANT: fn may run more than once in some
	// implementations; it must only modify d.
	UpdateDevice(ctx context.Context, id string, create bool, fn func(d *Device) error) (Device, error)
}

// Events is each device's bounded event history.
type Events interface {
	// AppendEvent adds an event to a device's history, dropping the oldest
	// beyond the store's bound.
	AppendEvent(ctx context.Context, id string, ev wire.Event) error
	// ListEvents returns up to limit of the device's newest events, oldest
	// first (limit <= 0 means all that are kept).
	ListEvents(ctx context.Context, id string, limit int) ([]wire.Event, error)
}

// Store is everything the control plane persists, except artifact bytes.
type Store interface {
	Models
	Devices
	Events
	// Close flushes and releases the store.
	Close() error
}
