// Package fleet is the control plane's identity authority: the fleet CA
// that issues device certificates against one-time enrollment tokens, the
// revocation list that cuts devices off, the control plane's own broker
// identity, operator API tokens with roles, and the audit log of every
// state-changing call. Everything lives in one directory: the CA key
// (0600), the CA certificate and a bbolt file.
//
// Only hashes of tokens are stored: a copy of the data directory does not
// let anyone enroll a device or call the API.
package fleet

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Options configures Open.
type Options struct {
	// Dir holds ca.key (0600), ca.crt and fleet.db; created 0700 if
	// missing. Required.
	Dir string
	// CertTTL is how long a device certificate is valid; default 365 days.
	CertTTL time.Duration
	// AuditLimit bounds the audit log; the oldest entries are dropped
	// first; default 10000 (a few MiB at most).
	AuditLimit int
	// Logger default: discard.
	Logger *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Fleet is an open identity store. Its methods are safe for concurrent use.
type Fleet struct {
	opts Options
	log  *slog.Logger
	db   *bolt.DB
	ca   *authority

	mu       sync.Mutex
	revoked  map[string]bool // certificate serials (hex) revoked
	onRevoke []func(deviceID string)
}

var (
	bucketEnroll    = []byte("enroll")    // sha256(token) -> enrollToken
	bucketDevices   = []byte("devices")   // device id -> deviceRecord
	bucketAPITokens = []byte("apitokens") // sha256(token) -> APIToken
	bucketAPINames  = []byte("apinames")  // token name -> sha256(token)
	bucketAudit     = []byte("audit")     // big-endian seq -> AuditEntry
)

// Open opens (creating on first use) the fleet CA and store in opts.Dir.
func Open(opts Options) (*Fleet, error) {
	if opts.Dir == "" {
		return nil, fmt.Errorf("%w: Dir is required (the directory for the fleet CA and store)", ErrOptions)
	}
	if opts.CertTTL <= 0 {
		opts.CertTTL = 365 * 24 * time.Hour
	}
	if opts.AuditLimit <= 0 {
		opts.AuditLimit = 10000
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("fleet: directory %s: %w", opts.Dir, err)
	}
	ca, err := loadOrCreateCA(opts.Dir, opts.Now())
	if err != nil {
		return nil, err
	}
	db, err := bolt.Open(filepath.Join(opts.Dir, "fleet.db"), 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("fleet: open store: %w", err)
	}
	f := &Fleet{opts: opts, log: opts.Logger, db: db, ca: ca, revoked: map[string]bool{}}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketEnroll, bucketDevices, bucketAPITokens, bucketAPINames, bucketAudit} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketDevices).ForEach(func(_, v []byte) error {
			var d deviceRecord
			if err := json.Unmarshal(v, &d); err != nil {
				return err
			}
			for _, c := range d.Certs {
				if !c.Revoked.IsZero() {
					f.revoked[c.Serial] = true
				}
			}
			return nil
		})
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("fleet: initialise store: %w", err)
	}
	return f, nil
}

// Close closes the store.
func (f *Fleet) Close() error {
	if err := f.db.Close(); err != nil {
		return fmt.Errorf("fleet: close: %w", err)
	}
	return nil
}

// hashToken is how tokens are keyed at rest.
func hashToken(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return []byte(hex.EncodeToString(sum[:]))
}
