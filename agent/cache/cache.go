// Package cache is the agent's durable model store: one bbolt file holding
// every model version's verified metadata envelope and state, the chunks of
// downloads in progress (so a killed agent resumes where it stopped), and the
// verified artifact bytes. Every state change is one bbolt transaction, so a
// crash at any instant leaves the active version and its artifact loadable.
//
// Layout (schema 2):
//
//	meta      "schema" -> "2"
//	tuf       role ("root", "timestamp", "snapshot", "targets") -> trusted
//	          TUF metadata bytes (schema 2; see shared/trust/tuf)
//	models    name 0x00 version -> JSON Record
//	chunks    digest -> bucket{ 8-byte big-endian offset -> bytes }
//	artifacts digest -> artifact bytes (only after size and digest verified)
//
// Chunks are written one key per received chunk rather than by appending to a
// growing value, so persisting progress costs O(chunk) per chunk, not
// O(artifact).
package cache

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/starling-edge/starling/shared/trust"
	"github.com/starling-edge/starling/shared/wire"
)

// SchemaVersion is the on-disk layout this package writes.
const SchemaVersion = 2

var (
	bucketMeta      = []byte("meta")
	bucketModels    = []byte("models")
	bucketChunks    = []byte("chunks")
	bucketArtifacts = []byte("artifacts")
	bucketTUF       = []byte("tuf")
	keySchema       = []byte("schema")
)

// Options configure Open. The zero value (with Path set) is valid.
type Options struct {
	// Path of the bbolt file; required.
	Path string
	// LockTimeout bounds the wait for the file lock held by another
	// process; default 2s.
	LockTimeout time.Duration
	// Now returns the current time for record timestamps; default time.Now.
	Now func() time.Time
}

// Record is one model version as the cache knows it.
type Record struct {
	Name     string    `json:"name"`
	Version  string    `json:"version"`
	Format   string    `json:"format,omitempty"`
	Digest   string    `json:"digest,omitempty"`
	Size     int64     `json:"size,omitempty"`
	Envelope []byte    `json:"envelope,omitempty"` // verified trust.Envelope JSON
	State    string    `json:"state"`              // one of wire.State*
	Check    string    `json:"check,omitempty"`    // failed check when rejected
	Error    string    `json:"error,omitempty"`
	Updated  time.Time `json:"updated"`
}

// Cache is an open cache file. It is safe for concurrent use.
type Cache struct {
	db  *bolt.DB
	now func() time.Time
}

// Open opens (creating if needed) the cache file and upgrades its schema.
func Open(opts Options) (*Cache, error) {
	if opts.Path == "" {
		return nil, fmt.Errorf("cache.Open: empty path: %w", ErrNotFound)
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = 2 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	db, err := bolt.Open(opts.Path, 0o600, &bolt.Options{Timeout: opts.LockTimeout})
	if err != nil {
		return nil, fmt.Errorf("cache.Open %s: %w", opts.Path, err)
	}
	c := &Cache{db: db, now: opts.Now}
	if err := c.Upgrade(); err != nil {
		db.Close()
		return nil, err
	}
	return c, nil
}

// Close closes the file.
func (c *Cache) Close() error { return c.db.Close() }

// Path returns the file's path.
func (c *Cache) Path() string { return c.db.Path() }

// Upgrade brings the file to SchemaVersion. A new file gets the schema-1
// buckets; a file from a newer agent is refused with ErrSchema rather than
// misread. Future schema changes add a step here, each in one transaction.
func (c *Cache) Upgrade() error {
	return c.db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return fmt.Errorf("cache.Upgrade: %w", err)
		}
		v := 0
		if b := meta.Get(keySchema); b != nil {
			v, err = strconv.Atoi(string(b))
			if err != nil {
				return fmt.Errorf("cache.Upgrade: schema key %q: %w", b, ErrSchema)
			}
		}
		if v > SchemaVersion {
			return fmt.Errorf("cache.Upgrade: file has schema %d, this agent knows up to %d: %w", v, SchemaVersion, ErrSchema)
		}
		// v == 0 (new file) -> 1: create the buckets.
		for _, name := range [][]byte{bucketModels, bucketChunks, bucketArtifacts} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("cache.Upgrade: %w", err)
			}
		}
		// 1 -> 2: the trusted TUF metadata bucket.
		if _, err := tx.CreateBucketIfNotExists(bucketTUF); err != nil {
			return fmt.Errorf("cache.Upgrade: %w", err)
		}
		return meta.Put(keySchema, []byte(strconv.Itoa(SchemaVersion)))
	})
}

// Schema returns the file's schema version.
func (c *Cache) Schema() (int, error) {
	var v int
	err := c.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMeta)
		if b == nil {
			return fmt.Errorf("cache.Schema: no meta bucket: %w", ErrCorrupt)
		}
		var err error
		v, err = strconv.Atoi(string(b.Get(keySchema)))
		return err
	})
	return v, err
}

func recordKey(name, version string) []byte {
	return []byte(name + "\x00" + version)
}

func validName(name, version string) error {
	if name == "" || version == "" || strings.ContainsRune(name, 0) || strings.ContainsRune(version, 0) {
		return fmt.Errorf("cache: model name %q version %q: empty or contains NUL: %w", name, version, ErrNotFound)
	}
	return nil
}

func getRecord(tx *bolt.Tx, name, version string) (Record, error) {
	var r Record
	b := tx.Bucket(bucketModels).Get(recordKey(name, version))
	if b == nil {
		return r, fmt.Errorf("model %s:%s: %w", name, version, ErrNotFound)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("model %s:%s record: %v: %w", name, version, err, ErrCorrupt)
	}
	return r, nil
}

func (c *Cache) putRecord(tx *bolt.Tx, r *Record) error {
	r.Updated = c.now().UTC()
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketModels).Put(recordKey(r.Name, r.Version), b)
}

func allRecords(tx *bolt.Tx) ([]Record, error) {
	var out []Record
	err := tx.Bucket(bucketModels).ForEach(func(k, v []byte) error {
		var r Record
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("record %q: %v: %w", k, err, ErrCorrupt)
		}
		out = append(out, r)
		return nil
	})
	return out, err
}

// Put stores verified metadata for a model version. A new version starts in
// wire.StateFetching (or wire.StateVerified when an artifact with its digest
// is already held). An existing record keeps its state and gets the fresh
// envelope. Re-signing a version with a different digest resets it to
// fetching, unless it is active or previous (ErrState).
func (c *Cache) Put(md *trust.ModelMetadata, envelope []byte) (Record, error) {
	if err := validName(md.Name, md.Version); err != nil {
		return Record{}, err
	}
	var out Record
	err := c.db.Update(func(tx *bolt.Tx) error {
		r, err := getRecord(tx, md.Name, md.Version)
		switch {
		case errors.Is(err, ErrNotFound):
			r = Record{Name: md.Name, Version: md.Version, State: wire.StateFetching}
		case err != nil:
			return err
		case r.Digest != md.Digest && (r.State == wire.StateActive || r.State == wire.StatePrevious):
			return fmt.Errorf("model %s:%s is %s with digest %s; new metadata says %s: %w",
				md.Name, md.Version, r.State, r.Digest, md.Digest, ErrState)
		case r.Digest != md.Digest:
			r.State = wire.StateFetching
		case r.State == wire.StateRejected || r.State == wire.StateFailed || r.State == wire.StateRetired:
			// Fresh metadata for a version that failed or was retired:
			// try again (resuming any held chunks or artifact).
			r.State = wire.StateFetching
		}
		r.Format, r.Digest, r.Size = md.Format, md.Digest, md.Size
		r.Envelope = append([]byte(nil), envelope...)
		r.Check, r.Error = "", ""
		if r.State == wire.StateFetching && tx.Bucket(bucketArtifacts).Get([]byte(r.Digest)) != nil {
			r.State = wire.StateVerified
		}
		if err := c.putRecord(tx, &r); err != nil {
			return err
		}
		out = r
		return nil
	})
	if err != nil {
		return Record{}, fmt.Errorf("cache.Put %s:%s: %w", md.Name, md.Version, err)
	}
	return out, nil
}

// Get returns one record, or ErrNotFound.
func (c *Cache) Get(name, version string) (Record, error) {
	var r Record
	err := c.db.View(func(tx *bolt.Tx) error {
		var err error
		r, err = getRecord(tx, name, version)
		return err
	})
	if err != nil {
		return r, fmt.Errorf("cache.Get: %w", err)
	}
	return r, nil
}

// List returns every record, sorted by name then version.
func (c *Cache) List() ([]Record, error) {
	var out []Record
	err := c.db.View(func(tx *bolt.Tx) error {
		var err error
		out, err = allRecords(tx)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("cache.List: %w", err)
	}
	return out, nil
}

// Active returns the active record of every model name, sorted by name.
func (c *Cache) Active() ([]Record, error) {
	all, err := c.List()
	if err != nil {
		return nil, err
	}
	var out []Record
	for _, r := range all {
		if r.State == wire.StateActive {
			out = append(out, r)
		}
	}
	return out, nil
}

// Reject marks a version rejected by a check (trust.Check names) or failed
// (check ""), creating the record if the version was never stored (its
// metadata did not verify). An active or previous version keeps its state
// and only gets the message: a rejection never takes away a served model.
func (c *Cache) Reject(name, version, state, check, msg string) error {
	if err := validName(name, version); err != nil {
		return err
	}
	if state != wire.StateRejected && state != wire.StateFailed {
		return fmt.Errorf("cache.Reject %s:%s: state %q is not rejected or failed: %w", name, version, state, ErrState)
	}
	err := c.db.Update(func(tx *bolt.Tx) error {
		r, err := getRecord(tx, name, version)
		if errors.Is(err, ErrNotFound) {
			r = Record{Name: name, Version: version}
		} else if err != nil {
			return err
		}
		if r.State != wire.StateActive && r.State != wire.StatePrevious {
			r.State = state
		}
		r.Check, r.Error = check, msg
		return c.putRecord(tx, &r)
	})
	if err != nil {
		return fmt.Errorf("cache.Reject %s:%s: %w", name, version, err)
	}
	return nil
}

func offsetKey(off int64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], uint64(off))
	return k[:]
}

// PutChunk persists one received chunk of the artifact with this digest.
// Chunks may arrive in any order and may overlap.
func (c *Cache) PutChunk(digest string, offset int64, data []byte) error {
	if offset < 0 || len(data) == 0 {
		return fmt.Errorf("cache.PutChunk %s: offset %d with %d bytes: %w", digest, offset, len(data), ErrState)
	}
	err := c.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.Bucket(bucketChunks).CreateBucketIfNotExists([]byte(digest))
		if err != nil {
			return err
		}
		if old := b.Get(offsetKey(offset)); len(old) >= len(data) {
			return nil // already held
		}
		return b.Put(offsetKey(offset), data)
	})
	if err != nil {
		return fmt.Errorf("cache.PutChunk %s@%d: %w", digest, offset, err)
	}
	return nil
}

// walkChunks visits the chunks in offset order, passing the part of each
// that extends the contiguous prefix; it stops at the first gap and returns
// the prefix length.
func walkChunks(b *bolt.Bucket, fn func(part []byte)) int64 {
	if b == nil {
		return 0
	}
	var end int64
	cur := b.Cursor()
	for k, v := cur.First(); k != nil; k, v = cur.Next() {
		off := int64(binary.BigEndian.Uint64(k))
		if off > end {
			break
		}
		if skip := end - off; skip < int64(len(v)) {
			if fn != nil {
				fn(v[skip:])
			}
			end = off + int64(len(v))
		}
	}
	return end
}

// Progress returns how many leading bytes of the artifact are held: the
// offset a resumed download starts from.
func (c *Cache) Progress(digest string) (int64, error) {
	var n int64
	err := c.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketArtifacts).Get([]byte(digest)) != nil {
			n = int64(len(tx.Bucket(bucketArtifacts).Get([]byte(digest))))
			return nil
		}
		n = walkChunks(tx.Bucket(bucketChunks).Bucket([]byte(digest)), nil)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("cache.Progress %s: %w", digest, err)
	}
	return n, nil
}

// Complete assembles the chunks of a fetching version, checks them with
// trust.VerifyArtifact and, in one transaction, stores the artifact, drops
// the chunks and marks the version verified. When the check fails the
// chunks are dropped (the next attempt starts over), the version is marked
// rejected with the check's name, and the trust error is returned.
// ErrIncomplete means chunks are still missing; nothing changes.
func (c *Cache) Complete(name, version string) (Record, error) {
	var out Record
	var verr error
	err := c.db.Update(func(tx *bolt.Tx) error {
		r, err := getRecord(tx, name, version)
		if err != nil {
			return err
		}
		if tx.Bucket(bucketArtifacts).Get([]byte(r.Digest)) != nil {
			if r.State == wire.StateFetching {
				r.State = wire.StateVerified
				if err := c.putRecord(tx, &r); err != nil {
					return err
				}
			}
			out = r
			return nil
		}
		cb := tx.Bucket(bucketChunks).Bucket([]byte(r.Digest))
		buf := make([]byte, 0, r.Size)
		n := walkChunks(cb, func(p []byte) { buf = append(buf, p...) })
		if n < r.Size {
			return fmt.Errorf("%d of %d bytes held: %w", n, r.Size, ErrIncomplete)
		}
		md := &trust.ModelMetadata{Name: r.Name, Version: r.Version, Digest: r.Digest, Size: r.Size}
		if cb != nil {
			if err := tx.Bucket(bucketChunks).DeleteBucket([]byte(r.Digest)); err != nil {
				return err
			}
		}
		if verr = trust.VerifyArtifact(md, buf); verr != nil {
			r.State, r.Check, r.Error = wire.StateRejected, trust.Check(verr), verr.Error()
			return c.putRecord(tx, &r)
		}
		if err := tx.Bucket(bucketArtifacts).Put([]byte(r.Digest), buf); err != nil {
			return err
		}
		r.State, r.Check, r.Error = wire.StateVerified, "", ""
		out = r
		return c.putRecord(tx, &r)
	})
	if err == nil {
		err = verr
	}
	if err != nil {
		return out, fmt.Errorf("cache.Complete %s:%s: %w", name, version, err)
	}
	return out, nil
}

// Artifact returns a copy of a verified artifact's bytes, or ErrNotFound.
func (c *Cache) Artifact(digest string) ([]byte, error) {
	var out []byte
	err := c.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketArtifacts).Get([]byte(digest))
		if b == nil {
			return fmt.Errorf("artifact %s: %w", digest, ErrNotFound)
		}
		out = bytes.Clone(b)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("cache.Artifact: %w", err)
	}
	return out, nil
}

// Activate makes a verified version the active one of its model, in one
// transaction: the old active becomes previous and the old previous is
// retired. The version must hold a verified artifact (ErrState otherwise).
func (c *Cache) Activate(name, version string) error {
	err := c.db.Update(func(tx *bolt.Tx) error {
		r, err := getRecord(tx, name, version)
		if err != nil {
			return err
		}
		if r.State == wire.StateActive {
			return nil
		}
		if tx.Bucket(bucketArtifacts).Get([]byte(r.Digest)) == nil {
			return fmt.Errorf("model %s:%s (%s) has no verified artifact: %w", name, version, r.State, ErrState)
		}
		all, err := allRecords(tx)
		if err != nil {
			return err
		}
		for i := range all {
			o := &all[i]
			if o.Name != name || o.Version == version {
				continue
			}
			switch o.State {
			case wire.StateActive:
				o.State = wire.StatePrevious
			case wire.StatePrevious:
				o.State = wire.StateRetired
			default:
				continue
			}
			if err := c.putRecord(tx, o); err != nil {
				return err
			}
		}
		r.State, r.Check, r.Error = wire.StateActive, "", ""
		return c.putRecord(tx, &r)
	})
	if err != nil {
		return fmt.Errorf("cache.Activate %s:%s: %w", name, version, err)
	}
	return nil
}

// Retire marks a version retired (no longer served). Its artifact stays
// until eviction; the chunks of an unfinished download are dropped.
func (c *Cache) Retire(name, version string) error {
	err := c.db.Update(func(tx *bolt.Tx) error {
		r, err := getRecord(tx, name, version)
		if err != nil {
			return err
		}
		if r.State == wire.StateFetching {
			// An abandoned download: drop its chunks unless another
			// version still fetches the same bytes.
			all, err := allRecords(tx)
			if err != nil {
				return err
			}
			shared := false
			for _, o := range all {
				shared = shared || (o.Digest == r.Digest && o.State == wire.StateFetching && o.Version != r.Version)
			}
			if cb := tx.Bucket(bucketChunks); !shared && cb.Bucket([]byte(r.Digest)) != nil {
				if err := cb.DeleteBucket([]byte(r.Digest)); err != nil {
					return err
				}
			}
		}
		r.State = wire.StateRetired
		return c.putRecord(tx, &r)
	})
	if err != nil {
		return fmt.Errorf("cache.Retire %s:%s: %w", name, version, err)
	}
	return nil
}

func protected(state string) bool {
	return state == wire.StateActive || state == wire.StatePrevious
}

// Evict drops the least recently updated versions that are neither active
// nor previous (nor mid-download) until the stored artifacts take at most
// maxBytes, and returns what it dropped. Active and previous versions are
// never evicted, so the result may stay above maxBytes.
func (c *Cache) Evict(maxBytes int64) ([]Record, error) {
	var dropped []Record
	err := c.db.Update(func(tx *bolt.Tx) error {
		all, err := allRecords(tx)
		if err != nil {
			return err
		}
		arts := tx.Bucket(bucketArtifacts)
		var total int64
		arts.ForEach(func(_, v []byte) error { total += int64(len(v)); return nil })
		keep := map[string]bool{} // digests a protected or fetching record needs
		for _, r := range all {
			if protected(r.State) || r.State == wire.StateFetching {
				keep[r.Digest] = true
			}
		}
		sort.SliceStable(all, func(i, j int) bool { return all[i].Updated.Before(all[j].Updated) })
		for _, r := range all {
			if total <= maxBytes {
				break
			}
			if protected(r.State) || r.State == wire.StateFetching {
				continue
			}
			if err := tx.Bucket(bucketModels).Delete(recordKey(r.Name, r.Version)); err != nil {
				return err
			}
			if r.Digest != "" && !keep[r.Digest] {
				if a := arts.Get([]byte(r.Digest)); a != nil {
					total -= int64(len(a))
					if err := arts.Delete([]byte(r.Digest)); err != nil {
						return err
					}
				}
			}
			dropped = append(dropped, r)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("cache.Evict: %w", err)
	}
	return dropped, nil
}

// Check verifies the file's invariants: a known schema; at most one active
// and one previous version per model; every active, previous and verified
// version holds an artifact whose size and digest match its record; every
// artifact is referenced by a record; every set of chunks belongs to an
// unfinished (fetching or failed) download. Tests run it after each case.
func (c *Cache) Check() error {
	err := c.db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil || string(meta.Get(keySchema)) != strconv.Itoa(SchemaVersion) {
			return fmt.Errorf("schema key missing or not %d: %w", SchemaVersion, ErrCorrupt)
		}
		for _, b := range [][]byte{bucketModels, bucketChunks, bucketArtifacts, bucketTUF} {
			if tx.Bucket(b) == nil {
				return fmt.Errorf("bucket %s missing: %w", b, ErrCorrupt)
			}
		}
		all, err := allRecords(tx)
		if err != nil {
			return err
		}
		seen := map[string]bool{}
		used := map[string]bool{}
		for _, r := range all {
			used[r.Digest] = true
			if protected(r.State) {
				k := r.Name + "/" + r.State
				if seen[k] {
					return fmt.Errorf("model %s has more than one %s version: %w", r.Name, r.State, ErrCorrupt)
				}
				seen[k] = true
			}
			if protected(r.State) || r.State == wire.StateVerified {
				a := tx.Bucket(bucketArtifacts).Get([]byte(r.Digest))
				if a == nil {
					return fmt.Errorf("model %s:%s is %s without an artifact: %w", r.Name, r.Version, r.State, ErrCorrupt)
				}
				md := &trust.ModelMetadata{Name: r.Name, Version: r.Version, Digest: r.Digest, Size: r.Size}
				if err := trust.VerifyArtifact(md, a); err != nil {
					return fmt.Errorf("%v: %w", err, ErrCorrupt)
				}
			}
		}
		downloading := map[string]bool{}
		for _, r := range all {
			if r.State == wire.StateFetching || r.State == wire.StateFailed {
				downloading[r.Digest] = true
			}
		}
		if err := tx.Bucket(bucketChunks).ForEachBucket(func(k []byte) error {
			if !downloading[string(k)] {
				return fmt.Errorf("chunks of %s belong to no unfinished download: %w", k, ErrCorrupt)
			}
			return nil
		}); err != nil {
			return err
		}
		return tx.Bucket(bucketArtifacts).ForEach(func(k, _ []byte) error {
			if !used[string(k)] {
				return fmt.Errorf("artifact %s has no record: %w", k, ErrCorrupt)
			}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("cache.Check %s: %w", c.db.Path(), err)
	}
	return nil
}

// LoadMetadata returns the trusted TUF metadata stored for role, or nil
// when none is (tuf.Store).
func (c *Cache) LoadMetadata(role string) ([]byte, error) {
	var out []byte
	err := c.db.View(func(tx *bolt.Tx) error {
		out = bytes.Clone(tx.Bucket(bucketTUF).Get([]byte(role)))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("cache.LoadMetadata %s: %w", role, err)
	}
	return out, nil
}

// StoreMetadata stores verified TUF metadata for role (tuf.Store).
func (c *Cache) StoreMetadata(role string, data []byte) error {
	if role == "" || len(data) == 0 {
		return fmt.Errorf("cache.StoreMetadata %q: empty role or metadata: %w", role, ErrState)
	}
	if err := c.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketTUF).Put([]byte(role), data) }); err != nil {
		return fmt.Errorf("cache.StoreMetadata %s: %w", role, err)
	}
	return nil
}

// DeleteMetadata forgets the TUF metadata of role (tuf.Store).
func (c *Cache) DeleteMetadata(role string) error {
	if err := c.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketTUF).Delete([]byte(role)) }); err != nil {
		return fmt.Errorf("cache.DeleteMetadata %s: %w", role, err)
	}
	return nil
}
