package fleet

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Role is what an API token may do. Each role includes the ones before it.
type Role string

// Roles, weakest first.
const (
	// RoleViewer reads: models, devices, events, artifacts.
	RoleViewer Role = "viewer"
	// RoleOperator also publishes models, assigns them to devices and
	// makes enrollment tokens.
	RoleOperator Role = "operator"
	// RoleAdmin also revokes devices, manages API tokens and reads the
	// audit log.
	RoleAdmin Role = "admin"
)

func (r Role) rank() int {
	switch r {
	case RoleViewer:
		return 1
	case RoleOperator:
		return 2
	case RoleAdmin:
		return 3
	}
	return 0
}

// Valid reports whether r is a known role.
func (r Role) Valid() bool { return r.rank() > 0 }

// Allows reports whether a token with role r may do what needs role need.
func (r Role) Allows(need Role) bool { return r.rank() > 0 && r.rank() >= need.rank() }

// apiPrefix marks API tokens.
const apiPrefix = "stl-api-"

// APIToken is an API token's record (never its secret).
type APIToken struct {
	Name    string    `json:"name"`
	Role    Role      `json:"role"`
	Created time.Time `json:"created"`
}

var validTokenName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`)

// CreateAPIToken makes a bearer token with a role under a unique name and
// returns its secret, which is stored only as a hash.
func (f *Fleet) CreateAPIToken(name string, role Role) (string, error) {
	if !validTokenName.MatchString(name) {
		return "", fmt.Errorf("%w: token name %.80q: want 1-64 of [A-Za-z0-9._@-]", ErrInvalid, name)
	}
	if !role.Valid() {
		return "", fmt.Errorf("%w: role %.40q: want viewer, operator or admin", ErrInvalid, role)
	}
	var b [32]byte
	rand.Read(b[:])
	secret := apiPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	rec := APIToken{Name: name, Role: role, Created: f.opts.Now().UTC()}
	v, _ := json.Marshal(rec)
	err := f.db.Update(func(tx *bolt.Tx) error {
		names := tx.Bucket(bucketAPINames)
		if names.Get([]byte(name)) != nil {
			return fmt.Errorf("%w: an API token named %q exists; delete it first or pick another name", ErrConflict, name)
		}
		h := hashToken(secret)
		if err := names.Put([]byte(name), h); err != nil {
			return err
		}
		return tx.Bucket(bucketAPITokens).Put(h, v)
	})
	if err != nil {
		return "", err
	}
	return secret, nil
}

// Authenticate returns the token record for a bearer secret, or
// ErrTokenUnknown.
func (f *Fleet) Authenticate(secret string) (APIToken, error) {
	var rec APIToken
	err := f.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketAPITokens).Get(hashToken(secret))
		if v == nil {
			return fmt.Errorf("%w: the API token is not valid (deleted, or mistyped)", ErrTokenUnknown)
		}
		return json.Unmarshal(v, &rec)
	})
	return rec, err
}

// APITokens lists the API tokens (names and roles, no secrets).
func (f *Fleet) APITokens() ([]APIToken, error) {
	var out []APIToken
	err := f.db.View(func(tx *bolt.Tx) error {
		tokens := tx.Bucket(bucketAPITokens)
		return tx.Bucket(bucketAPINames).ForEach(func(_, h []byte) error {
			var rec APIToken
			if err := json.Unmarshal(tokens.Get(h), &rec); err != nil {
				return err
			}
			out = append(out, rec)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("fleet: list API tokens: %w", err)
	}
	return out, nil
}

// DeleteAPIToken deletes a token by name; it stops working at once.
func (f *Fleet) DeleteAPIToken(name string) error {
	return f.db.Update(func(tx *bolt.Tx) error {
		names := tx.Bucket(bucketAPINames)
		h := names.Get([]byte(name))
		if h == nil {
			return fmt.Errorf("%w: no API token named %.80q", ErrNotFound, name)
		}
		if err := tx.Bucket(bucketAPITokens).Delete(h); err != nil {
			return err
		}
		return names.Delete([]byte(name))
	})
}

// BootstrapAdmin makes an admin token named "admin" and writes its secret
// to path (0600) when the fleet has no API token at all (the first start).
// It reports whether it made one. Otherwise it leaves path alone.
func (f *Fleet) BootstrapAdmin(path string) (bool, error) {
	tokens, err := f.APITokens()
	if err != nil {
		return false, err
	}
	if len(tokens) > 0 {
		return false, nil
	}
	secret, err := f.CreateAPIToken("admin", RoleAdmin)
	if err != nil {
		return false, err
	}
	if err := writeFileAtomic(path, []byte(secret+"\n"), 0o600); err != nil {
		// Without the file nobody could use the token: drop it so the
		// next start tries again.
		if derr := f.DeleteAPIToken("admin"); derr != nil {
			err = errors.Join(err, derr)
		}
		return false, fmt.Errorf("fleet: write bootstrap admin token %s: %w", path, err)
	}
	return true, nil
}

// AuditEntry is one state-changing call.
type AuditEntry struct {
	Time   time.Time `json:"time"`
	Actor  string    `json:"actor"` // API token name, "device:ID", or "anonymous"
	Role   string    `json:"role,omitempty"`
	Action string    `json:"action"` // "METHOD /path"
	Target string    `json:"target,omitempty"`
	Status int       `json:"status"`
	Result string    `json:"result"` // "ok" or the error answered
	Remote string    `json:"remote,omitempty"`
}

// Audit appends an entry, dropping the oldest past Options.AuditLimit.
func (f *Fleet) Audit(e AuditEntry) error {
	if e.Time.IsZero() {
		e.Time = f.opts.Now().UTC()
	}
	v, _ := json.Marshal(e)
	err := f.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAudit)
		seq, _ := b.NextSequence()
		var k [8]byte
		binary.BigEndian.PutUint64(k[:], seq)
		if err := b.Put(k[:], v); err != nil {
			return err
		}
		for n := b.Stats().KeyN + 1 - f.opts.AuditLimit; n > 0; n-- {
			c := b.Cursor()
			first, _ := c.First()
			if first == nil {
				break
			}
			if err := b.Delete(first); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("fleet: audit: %w", err)
	}
	return nil
}

// AuditLog returns up to limit entries, newest first.
func (f *Fleet) AuditLog(limit int) ([]AuditEntry, error) {
	var out []AuditEntry
	err := f.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketAudit).Cursor()
		for k, v := c.Last(); k != nil && len(out) < limit; k, v = c.Prev() {
			var e AuditEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return err
			}
			out = append(out, e)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("fleet: read audit log: %w", err)
	}
	return out, nil
}

// ReadTokenFile reads a token written by BootstrapAdmin (or by hand),
// trimming the trailing newline.
func ReadTokenFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return string(b), nil
}
