// Package tufrepo is the control plane's side of The Update Framework: it
// stores the root and targets metadata the operator signs offline
// (starlingctl), holds the two online keys (snapshot and timestamp), signs a
// new snapshot and timestamp whenever targets change, re-signs them before
// they expire, and serves every metadata file by name to devices (over MQTT
// through the link, and over HTTP through the API).
//
// The online keys cannot make a device accept a target: targets are signed
// by the operator's offline key, which root names. A thief of these keys can
// only replay or withhold what the operator signed, and devices detect both
// (rollback, freeze, mix-and-match).
//
// Layout under Options.Dir:
//
//	keys/snapshot.key, keys/timestamp.key   online keys, 0600, made on first Open
//	metadata/<N>.root.json                  every root version
//	metadata/<N>.targets.json               every targets version
//	metadata/<N>.snapshot.json              every snapshot version
//	metadata/timestamp.json                 the current timestamp
package tufrepo

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/starling-edge/starling/shared/trust"
	"github.com/starling-edge/starling/shared/trust/tuf"
)

// Options configure Open. Dir is required.
type Options struct {
	Dir string
	// TimestampExpiry is the lifetime of each timestamp; default
	// tuf.DefaultTimestampExpiry (24h). Devices refuse updates (freeze)
	// once the newest timestamp they can get is older than this.
	TimestampExpiry time.Duration
	// SnapshotExpiry is the lifetime of each snapshot; default
	// tuf.DefaultSnapshotExpiry (7 days).
	SnapshotExpiry time.Duration
	// CheckInterval is how often Run looks for metadata to re-sign; each
	// role is re-signed once less than half its lifetime remains. Default
	// a tenth of TimestampExpiry, at least 100ms.
	CheckInterval time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Logger; default discard.
	Logger *slog.Logger
}

// Repo is a repository. Its methods are safe for concurrent use.
type Repo struct {
	opts     Options
	log      *slog.Logger
	snapKey  *trust.PrivateKey
	tsKey    *trust.PrivateKey
	metaDir  string
	mu       sync.Mutex
	root     *metadata.Metadata[metadata.RootType]
	targets  *metadata.Metadata[metadata.TargetsType]
	snapshot *metadata.Metadata[metadata.SnapshotType]
	stamp    *metadata.Metadata[metadata.TimestampType]
}

// Open opens (creating) the repository in opts.Dir.
func Open(opts Options) (*Repo, error) {
	if opts.Dir == "" {
		return nil, fmt.Errorf("tufrepo.Open: Dir is required: %w", ErrOptions)
	}
	if opts.TimestampExpiry <= 0 {
		opts.TimestampExpiry = tuf.DefaultTimestampExpiry
	}
	if opts.SnapshotExpiry <= 0 {
		opts.SnapshotExpiry = tuf.DefaultSnapshotExpiry
	}
	if opts.CheckInterval <= 0 {
		opts.CheckInterval = max(opts.TimestampExpiry/10, 100*time.Millisecond)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Repo{opts: opts, log: opts.Logger, metaDir: filepath.Join(opts.Dir, "metadata")}
	keyDir := filepath.Join(opts.Dir, "keys")
	for _, d := range []string{keyDir, r.metaDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("tufrepo.Open: %w", err)
		}
	}
	var err error
	if r.snapKey, err = loadOrCreateKey(filepath.Join(keyDir, "snapshot.key")); err != nil {
		return nil, err
	}
	if r.tsKey, err = loadOrCreateKey(filepath.Join(keyDir, "timestamp.key")); err != nil {
		return nil, err
	}
	if err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

func loadOrCreateKey(path string) (*trust.PrivateKey, error) {
	k, err := trust.ReadPrivateKey(path)
	if err == nil {
		return k, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("tufrepo: online key: %w", err)
	}
	if k, err = trust.GenerateKey(); err != nil {
		return nil, err
	}
	if err := trust.WriteKeyFile(path, k.PrivateFile(), 0o600); err != nil {
		return nil, fmt.Errorf("tufrepo: write online key: %w", err)
	}
	return k, nil
}

// latest returns the highest N of metadata/<N>.<role>.json, 0 if none.
func (r *Repo) latest(role string) (int64, error) {
	entries, err := os.ReadDir(r.metaDir)
	if err != nil {
		return 0, fmt.Errorf("tufrepo: %w", err)
	}
	var best int64
	for _, e := range entries {
		v, rest, ok := strings.Cut(e.Name(), ".")
		if !ok || rest != role+".json" {
			continue
		}
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n > best {
			best = n
		}
	}
	return best, nil
}

func (r *Repo) load() error {
	read := func(name string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(r.metaDir, name))
		if err != nil {
			return nil, fmt.Errorf("tufrepo: load %s: %w", name, err)
		}
		return b, nil
	}
	for _, role := range []string{tuf.RoleRoot, tuf.RoleTargets, tuf.RoleSnapshot} {
		n, err := r.latest(role)
		if err != nil || n == 0 {
			if err != nil {
				return err
			}
			continue
		}
		b, err := read(fmt.Sprintf("%d.%s.json", n, role))
		if err != nil {
			return err
		}
		switch role {
		case tuf.RoleRoot:
			r.root, err = tuf.ParseRoot(b)
		case tuf.RoleTargets:
			r.targets, err = tuf.ParseTargets(b)
		case tuf.RoleSnapshot:
			r.snapshot, err = tuf.ParseSnapshot(b)
		}
		if err != nil {
			return fmt.Errorf("tufrepo: load: %w", err)
		}
	}
	if b, err := read("timestamp.json"); err == nil {
		if r.stamp, err = tuf.ParseTimestamp(b); err != nil {
			return fmt.Errorf("tufrepo: load: %w", err)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// write stores a metadata file atomically (temporary file, fsync, rename).
func (r *Repo) write(name string, data []byte) error {
	f, err := os.CreateTemp(r.metaDir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("tufrepo: write %s: %w", name, err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("tufrepo: write %s: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("tufrepo: write %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("tufrepo: write %s: %w", name, err)
	}
	if err := os.Rename(f.Name(), filepath.Join(r.metaDir, name)); err != nil {
		return fmt.Errorf("tufrepo: write %s: %w", name, err)
	}
	return nil
}

// OnlineKeys returns the public halves of the snapshot and timestamp keys,
// which the operator's root must name.
func (r *Repo) OnlineKeys() (snapshot, timestamp ed25519.PublicKey) {
	return r.snapKey.Public(), r.tsKey.Public()
}

// File returns a metadata file by name ("timestamp.json", "3.root.json",
// ...), or ErrNotFound. "root.json" is the newest root.
func (r *Repo) File(name string) ([]byte, error) {
	if name == "root.json" {
		r.mu.Lock()
		if r.root == nil {
			r.mu.Unlock()
			return nil, fmt.Errorf("tufrepo: %s: %w", name, ErrNotFound)
		}
		name = fmt.Sprintf("%d.root.json", r.root.Signed.Version)
		r.mu.Unlock()
	}
	if !tuf.ValidFileName(name) {
		return nil, fmt.Errorf("tufrepo: %q is not a metadata file name: %w", name, ErrNotFound)
	}
	b, err := os.ReadFile(filepath.Join(r.metaDir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("tufrepo: %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("tufrepo: %s: %w", name, err)
	}
	return b, nil
}

// SetRoot stores a new root version: version 1 signed by itself when the
// repository has none, else the next version, signed by a threshold of
// the current root's keys and of its own. The root must name this control
// plane's online keys for snapshot and timestamp.
func (r *Repo) SetRoot(data []byte) (*metadata.Metadata[metadata.RootType], error) {
	md, err := tuf.ParseRoot(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRejected, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	want := int64(1)
	if r.root != nil {
		want = r.root.Signed.Version + 1
		if err := tuf.Verify(r.root, tuf.RoleRoot, md); err != nil {
			return nil, fmt.Errorf("%w: root version %d is not signed by the current root's keys: %w", ErrRejected, md.Signed.Version, err)
		}
	}
	if md.Signed.Version != want {
		return nil, fmt.Errorf("%w: root version %d, the next version is %d: %w", ErrConflict, md.Signed.Version, want, trust.ErrRollback)
	}
	if err := tuf.Verify(md, tuf.RoleRoot, md); err != nil {
		return nil, fmt.Errorf("%w: root version %d does not meet its own threshold: %w", ErrRejected, md.Signed.Version, err)
	}
	if md.Signed.IsExpired(r.opts.Now()) {
		return nil, fmt.Errorf("%w: root version %d expired at %s: %w", ErrRejected, md.Signed.Version, md.Signed.Expires.Format(time.RFC3339), trust.ErrExpired)
	}
	for role, k := range map[string]ed25519.PublicKey{tuf.RoleSnapshot: r.snapKey.Public(), tuf.RoleTimestamp: r.tsKey.Public()} {
		ids := md.Signed.Roles[role].KeyIDs
		if len(ids) != 1 || ids[0] != tuf.KeyID(k) {
			return nil, fmt.Errorf("%w: root version %d does not name this control plane's online %s key %.12s (and only it); build root with the keys from GET /api/v1/trust/online-keys",
				ErrRejected, md.Signed.Version, role, tuf.KeyID(k))
		}
	}
	if err := r.write(fmt.Sprintf("%d.root.json", md.Signed.Version), data); err != nil {
		return nil, err
	}
	r.root = md
	r.log.Info("root stored", "version", md.Signed.Version)
	return md, nil
}

// CheckTargets verifies targets metadata as PutTargets would, without
// storing it.
func (r *Repo) CheckTargets(data []byte) (*metadata.Metadata[metadata.TargetsType], error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.checkTargetsLocked(data)
}

// checkTargetsLocked is CheckTargets with r.mu held.
func (r *Repo) checkTargetsLocked(data []byte) (*metadata.Metadata[metadata.TargetsType], error) {
	if r.root == nil {
		return nil, fmt.Errorf("%w: run starlingctl keys init first", ErrNoRoot)
	}
	md, err := tuf.ParseTargets(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRejected, err)
	}
	if err := tuf.Verify(r.root, tuf.RoleTargets, md); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRejected, err)
	}
	want := int64(1)
	if r.targets != nil {
		want = r.targets.Signed.Version + 1
	}
	if md.Signed.Version != want {
		return nil, fmt.Errorf("%w: targets version %d, the next version is %d; fetch the current targets and sign again", ErrConflict, md.Signed.Version, want)
	}
	if md.Signed.IsExpired(r.opts.Now()) {
		return nil, fmt.Errorf("%w: targets version %d expired at %s: %w", ErrRejected, md.Signed.Version, md.Signed.Expires.Format(time.RFC3339), trust.ErrExpired)
	}
	return md, nil
}

// PutTargets stores the next targets version and signs a snapshot and a
// timestamp for it.
func (r *Repo) PutTargets(data []byte) (*metadata.Metadata[metadata.TargetsType], error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	md, err := r.checkTargetsLocked(data)
	if err != nil {
		return nil, err
	}
	if err := r.write(fmt.Sprintf("%d.targets.json", md.Signed.Version), data); err != nil {
		return nil, err
	}
	r.targets = md
	if err := r.signSnapshotLocked(); err != nil {
		return nil, err
	}
	r.log.Info("targets stored", "version", md.Signed.Version, "targets", len(md.Signed.Targets))
	return md, nil
}

// Targets returns the current targets metadata (nil before the first).
func (r *Repo) Targets() *metadata.Metadata[metadata.TargetsType] {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.targets
}

// signSnapshotLocked signs the next snapshot for the current targets and
// a timestamp for it. r.mu must be held.
func (r *Repo) signSnapshotLocked() error {
	now := r.opts.Now()
	v := int64(1)
	if r.snapshot != nil {
		v = r.snapshot.Signed.Version + 1
	}
	s := tuf.NewSnapshot(v, now.Add(r.opts.SnapshotExpiry), r.targets.Signed.Version)
	b, err := tuf.Sign(s, r.snapKey)
	if err != nil {
		return err
	}
	if err := r.write(fmt.Sprintf("%d.snapshot.json", v), b); err != nil {
		return err
	}
	r.snapshot = s
	return r.signTimestampLocked()
}

// signTimestampLocked signs the next timestamp for the current snapshot.
// r.mu must be held.
func (r *Repo) signTimestampLocked() error {
	v := int64(1)
	if r.stamp != nil {
		v = r.stamp.Signed.Version + 1
	}
	ts := tuf.NewTimestamp(v, r.opts.Now().Add(r.opts.TimestampExpiry), r.snapshot.Signed.Version)
	b, err := tuf.Sign(ts, r.tsKey)
	if err != nil {
		return err
	}
	if err := r.write("timestamp.json", b); err != nil {
		return err
	}
	r.stamp = ts
	return nil
}

// Renew re-signs the snapshot (and timestamp) when less than half of the
// snapshot's lifetime remains, else the timestamp alone when less than
// half of its lifetime remains. It does nothing before the first targets.
func (r *Repo) Renew() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.targets == nil || r.snapshot == nil {
		return nil
	}
	now := r.opts.Now()
	switch {
	case now.After(r.snapshot.Signed.Expires.Add(-r.opts.SnapshotExpiry / 2)):
		return r.signSnapshotLocked()
	case r.stamp == nil || now.After(r.stamp.Signed.Expires.Add(-r.opts.TimestampExpiry/2)):
		return r.signTimestampLocked()
	}
	return nil
}

// Run re-signs online metadata before it expires until ctx ends; it
// returns nil then.
func (r *Repo) Run(ctx context.Context) error {
	t := time.NewTicker(r.opts.CheckInterval)
	defer t.Stop()
	for {
		if err := r.Renew(); err != nil {
			r.log.Error("re-signing online metadata", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
