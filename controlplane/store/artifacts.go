package store

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Artifacts is a content-addressed file store: an artifact with digest
// sha256:<hex> lives at <dir>/sha256/<hex>. A file appears under its name
// only complete and synced (written to <dir>/tmp, fsynced, renamed, and the
// directory fsynced), so a crash never leaves a partial artifact in place.
type Artifacts struct {
	dir string
}

// OpenArtifacts opens (creating if needed) the artifact store in dir and
// removes temporary files a crash left behind.
func OpenArtifacts(dir string) (*Artifacts, error) {
	a := &Artifacts{dir: dir}
	for _, d := range []string{a.blobDir(), a.tmpDir()} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("store: artifacts %s: %w", dir, err)
		}
	}
	leftovers, err := os.ReadDir(a.tmpDir())
	if err != nil {
		return nil, fmt.Errorf("store: artifacts %s: %w", dir, err)
	}
	for _, e := range leftovers {
		_ = os.Remove(filepath.Join(a.tmpDir(), e.Name()))
	}
	return a, nil
}

func (a *Artifacts) blobDir() string { return filepath.Join(a.dir, "sha256") }
func (a *Artifacts) tmpDir() string  { return filepath.Join(a.dir, "tmp") }

// ParseDigest checks that digest is "sha256:<64 lowercase hex>" and returns
// the hex part.
func ParseDigest(digest string) (string, error) {
	h, ok := strings.CutPrefix(digest, "sha256:")
	if !ok || len(h) != 64 || strings.ToLower(h) != h {
		return "", fmt.Errorf("digest %q is not sha256:<64 lowercase hex>: %w", digest, ErrInvalid)
	}
	if _, err := hex.DecodeString(h); err != nil {
		return "", fmt.Errorf("digest %q is not sha256:<64 lowercase hex>: %w", digest, ErrInvalid)
	}
	return h, nil
}

// Open returns the artifact's file and size, or ErrNotFound. The caller
// closes the file.
func (a *Artifacts) Open(digest string) (*os.File, int64, error) {
	h, err := ParseDigest(digest)
	if err != nil {
		return nil, 0, fmt.Errorf("store: artifact: %w", err)
	}
	f, err := os.Open(filepath.Join(a.blobDir(), h))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, fmt.Errorf("store: artifact %s: %w", digest, ErrNotFound)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("store: artifact %s: %w", digest, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("store: artifact %s: %w", digest, err)
	}
	return f, st.Size(), nil
}

// Begin starts writing a new artifact. Write its bytes, then Commit or
// Abort; the digest is known only after the last byte.
func (a *Artifacts) Begin() (*PendingArtifact, error) {
	f, err := os.CreateTemp(a.tmpDir(), "upload-*")
	if err != nil {
		return nil, fmt.Errorf("store: begin artifact: %w", err)
	}
	return &PendingArtifact{a: a, f: f, h: sha256.New()}, nil
}

// PendingArtifact is an artifact being written. It is not safe for
// concurrent use.
type PendingArtifact struct {
	a    *Artifacts
	f    *os.File
	h    hash.Hash
	size int64
	done bool
}

// Write implements io.Writer, hashing as it goes.
func (p *PendingArtifact) Write(b []byte) (int, error) {
	n, err := p.f.Write(b)
	p.h.Write(b[:n])
	p.size += int64(n)
	return n, err
}

// Size returns the number of bytes written so far.
func (p *PendingArtifact) Size() int64 { return p.size }

// Digest returns "sha256:<hex>" of the bytes written so far.
func (p *PendingArtifact) Digest() string { return "sha256:" + hex.EncodeToString(p.h.Sum(nil)) }

// Commit syncs the bytes and moves them to their content address. If an
// artifact with the same digest is already stored, the rename replaces it
// atomically with identical bytes.
func (p *PendingArtifact) Commit() (digest string, err error) {
	if p.done {
		return "", fmt.Errorf("store: commit artifact: already finished: %w", ErrInvalid)
	}
	p.done = true
	digest = p.Digest()
	tmp := p.f.Name()
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	if err := p.f.Sync(); err != nil {
		p.f.Close()
		return "", fmt.Errorf("store: commit artifact %s: sync: %w", digest, err)
	}
	if err := p.f.Close(); err != nil {
		return "", fmt.Errorf("store: commit artifact %s: %w", digest, err)
	}
	final := filepath.Join(p.a.blobDir(), strings.TrimPrefix(digest, "sha256:"))
	if err := os.Rename(tmp, final); err != nil {
		return "", fmt.Errorf("store: commit artifact %s: %w", digest, err)
	}
	if err := syncDir(p.a.blobDir()); err != nil {
		return "", fmt.Errorf("store: commit artifact %s: sync dir: %w", digest, err)
	}
	return digest, nil
}

// Abort discards the bytes. It is safe to call after Commit (it does nothing).
func (p *PendingArtifact) Abort() {
	if p.done {
		return
	}
	p.done = true
	p.f.Close()
	_ = os.Remove(p.f.Name())
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
