package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/starling-edge/starling/shared/wire"
)

// schemaVersion is the on-disk layout this code writes. Open refuses newer
// files and upgrades older ones (there are none yet) in upgrade.
const schemaVersion = 1

var (
	bucketMeta    = []byte("meta")
	bucketModels  = []byte("models")
	bucketDevices = []byte("devices")
	bucketEvents  = []byte("events") // one sub-bucket per device id
	keySchema     = []byte("schema")
)

// BoltOptions configures OpenBolt.
type BoltOptions struct {
	// EventHistory is how many events are kept per device; default 100.
	EventHistory int
	// LockTimeout is how long Open waits for another process holding the
	// file to let go; default 2s.
	LockTimeout time.Duration
}

// Bolt is the embedded Store on a single bbolt file.
type Bolt struct {
	db      *bolt.DB
	history int
}

var _ Store = (*Bolt)(nil)

// OpenBolt opens (creating if needed) the store file at path.
func OpenBolt(path string, opts BoltOptions) (*Bolt, error) {
	if opts.EventHistory <= 0 {
		opts.EventHistory = 100
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = 2 * time.Second
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.LockTimeout})
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	s := &Bolt{db: db, history: opts.EventHistory}
	if err := s.upgrade(); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	return s, nil
}

// upgrade creates the buckets of a new file and checks the schema version of
// an existing one. Later layouts migrate older files here, in one transaction.
func (s *Bolt) upgrade() error {
	return s.db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if v := meta.Get(keySchema); v != nil {
			if len(v) != 8 {
				return fmt.Errorf("schema version is %d bytes, want 8: %w", len(v), ErrSchema)
			}
			if got := binary.BigEndian.Uint64(v); got > schemaVersion {
				return fmt.Errorf("file has schema %d, this build reads up to %d: %w", got, schemaVersion, ErrSchema)
			}
		}
		for _, b := range [][]byte{bucketModels, bucketDevices, bucketEvents} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return meta.Put(keySchema, binary.BigEndian.AppendUint64(nil, schemaVersion))
	})
}

// Close closes the file; bbolt has synced every committed transaction.
func (s *Bolt) Close() error { return s.db.Close() }

func modelKey(name, version string) []byte {
	// NUL cannot appear in a valid name, so the key splits unambiguously
	// and sorts by name, then version.
	return []byte(name + "\x00" + version)
}

func (s *Bolt) view(fn func(tx *bolt.Tx) error) error {
	err := s.db.View(fn)
	if errors.Is(err, bolt.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

func (s *Bolt) update(fn func(tx *bolt.Tx) error) error {
	err := s.db.Update(fn)
	if errors.Is(err, bolt.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// PutModel implements Models.
func (s *Bolt) PutModel(_ context.Context, m Model) (bool, error) {
	if m.Name == "" || m.Version == "" || m.Digest == "" {
		return false, fmt.Errorf("store.PutModel %q:%q: name, version and digest are required: %w", m.Name, m.Version, ErrInvalid)
	}
	val, err := json.Marshal(m)
	if err != nil {
		return false, fmt.Errorf("store.PutModel %s:%s: %w", m.Name, m.Version, err)
	}
	created := false
	err = s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketModels)
		key := modelKey(m.Name, m.Version)
		if old := b.Get(key); old != nil {
			var prev Model
			if err := json.Unmarshal(old, &prev); err != nil {
				return fmt.Errorf("stored record is corrupt: %w", err)
			}
			if prev.Digest != m.Digest {
				return fmt.Errorf("version exists with digest %s, not %s: %w", prev.Digest, m.Digest, ErrConflict)
			}
			return nil
		}
		created = true
		return b.Put(key, val)
	})
	if err != nil {
		return false, fmt.Errorf("store.PutModel %s:%s: %w", m.Name, m.Version, err)
	}
	return created, nil
}

// GetModel implements Models.
func (s *Bolt) GetModel(_ context.Context, name, version string) (Model, error) {
	var m Model
	err := s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketModels).Get(modelKey(name, version))
		if v == nil {
			return ErrNotFound
		}
		return json.Unmarshal(v, &m)
	})
	if err != nil {
		return Model{}, fmt.Errorf("store.GetModel %s:%s: %w", name, version, err)
	}
	return m, nil
}

// ListModels implements Models.
func (s *Bolt) ListModels(_ context.Context) ([]Model, error) {
	out := []Model{}
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketModels).ForEach(func(k, v []byte) error {
			var m Model
			if err := json.Unmarshal(v, &m); err != nil {
				return fmt.Errorf("record %q: %w", bytes.ReplaceAll(k, []byte{0}, []byte(":")), err)
			}
			out = append(out, m)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store.ListModels: %w", err)
	}
	return out, nil
}

// GetDevice implements Devices.
func (s *Bolt) GetDevice(_ context.Context, id string) (Device, error) {
	var d Device
	err := s.view(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketDevices).Get([]byte(id))
		if v == nil {
			return ErrNotFound
		}
		return json.Unmarshal(v, &d)
	})
	if err != nil {
		return Device{}, fmt.Errorf("store.GetDevice %s: %w", id, err)
	}
	return d, nil
}

// ListDevices implements Devices.
func (s *Bolt) ListDevices(_ context.Context) ([]Device, error) {
	out := []Device{}
	err := s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketDevices).ForEach(func(k, v []byte) error {
			var d Device
			if err := json.Unmarshal(v, &d); err != nil {
				return fmt.Errorf("device %q: %w", k, err)
			}
			out = append(out, d)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("store.ListDevices: %w", err)
	}
	return out, nil
}

// UpdateDevice implements Devices.
func (s *Bolt) UpdateDevice(_ context.Context, id string, create bool, fn func(d *Device) error) (Device, error) {
	if !wire.ValidDeviceID(id) {
		return Device{}, fmt.Errorf("store.UpdateDevice %q: not a valid device id: %w", id, ErrInvalid)
	}
	var d Device
	err := s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDevices)
		d = Device{}
		if v := b.Get([]byte(id)); v != nil {
			if err := json.Unmarshal(v, &d); err != nil {
				return fmt.Errorf("stored record is corrupt: %w", err)
			}
		} else if !create {
			return ErrNotFound
		} else {
			d = Device{ID: id}
		}
		if err := fn(&d); err != nil {
			return err
		}
		d.ID = id // the key is the identity; fn cannot rename a device
		val, err := json.Marshal(d)
		if err != nil {
			return err
		}
		return b.Put([]byte(id), val)
	})
	if errors.Is(err, ErrNoChange) {
		return s.GetDevice(context.Background(), id)
	}
	if err != nil {
		return Device{}, fmt.Errorf("store.UpdateDevice %s: %w", id, err)
	}
	return d, nil
}

// AppendEvent implements Events.
func (s *Bolt) AppendEvent(_ context.Context, id string, ev wire.Event) error {
	if !wire.ValidDeviceID(id) {
		return fmt.Errorf("store.AppendEvent %q: not a valid device id: %w", id, ErrInvalid)
	}
	val, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("store.AppendEvent %s: %w", id, err)
	}
	err = s.update(func(tx *bolt.Tx) error {
		b, err := tx.Bucket(bucketEvents).CreateBucketIfNotExists([]byte(id))
		if err != nil {
			return err
		}
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		if err := b.Put(binary.BigEndian.AppendUint64(nil, seq), val); err != nil {
			return err
		}
		// Keys are increasing sequence numbers: drop from the front.
		extra := b.Stats().KeyN + 1 - s.history
		c := b.Cursor()
		for k, _ := c.First(); k != nil && extra > 0; k, _ = c.First() {
			if err := c.Delete(); err != nil {
				return err
			}
			extra--
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store.AppendEvent %s: %w", id, err)
	}
	return nil
}

// ListEvents implements Events.
func (s *Bolt) ListEvents(_ context.Context, id string, limit int) ([]wire.Event, error) {
	out := []wire.Event{}
	err := s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketEvents).Bucket([]byte(id))
		if b == nil {
			return nil
		}
		c := b.Cursor()
		// Walk back from the newest, then reverse to oldest first.
		for k, v := c.Last(); k != nil && (limit <= 0 || len(out) < limit); k, v = c.Prev() {
			var ev wire.Event
			if err := json.Unmarshal(v, &ev); err != nil {
				return fmt.Errorf("event %x: %w", k, err)
			}
			out = append(out, ev)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store.ListEvents %s: %w", id, err)
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, nil
}
