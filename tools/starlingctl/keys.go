package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/starling-edge/starling/shared/trust"
	"github.com/starling-edge/starling/shared/trust/tuf"
)

// Files in the key directory. The private keys stay on the operator's
// machine; root.json is what devices are installed with (--trust-root).
const (
	rootKeyFile    = "root.key"
	targetsKeyFile = "targets.key"
	rootJSONFile   = "root.json"
)

// httpFetcher reads repository metadata from the control plane's API.
type httpFetcher struct{ c *client }

func (f httpFetcher) FetchMetadata(ctx context.Context, name string, maxLen int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", strings.TrimRight(f.c.base, "/")+"/api/v1/tuf/"+url.PathEscape(name), nil)
	if err != nil {
		return nil, err
	}
	tok, err := apiToken()
	if err != nil {
		return nil, err
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := f.c.httpClient().Do(req)
	if err != nil {
		return nil, fmt.Errorf("control plane unreachable at %s: %w", f.c.base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == 404 {
		return nil, fmt.Errorf("%s: %w", name, tuf.ErrNotFound)
	}
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("GET %s: %s", name, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxLen+1))
	if err == nil && int64(len(b)) > maxLen {
		err = tuf.ErrTooLarge
	}
	return b, err
}

func (c *client) postJSON(ctx context.Context, path string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, "POST", strings.TrimRight(c.base, "/")+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	return c.send(req, nil)
}

// currentTargets refreshes a client from the local root.json and returns
// the repository's verified targets metadata (so an operator never signs
// on top of targets the control plane forged).
func currentTargets(ctx context.Context, c *client, dir string) (*metadata.Metadata[metadata.TargetsType], error) {
	root, err := os.ReadFile(filepath.Join(dir, rootJSONFile))
	if err != nil {
		return nil, fmt.Errorf("read the operator's root.json (run starlingctl keys init): %w", err)
	}
	store := &tuf.MemoryStore{}
	// Expired targets are still the base of the next version: the push
	// that replaces them must not be refused for their expiry.
	tc, err := tuf.NewClient(tuf.ClientOptions{Root: root, Store: store, Fetcher: httpFetcher{c}, AllowExpiredTargets: true})
	if err != nil {
		return nil, err
	}
	if err := tc.Refresh(ctx); err != nil {
		return nil, fmt.Errorf("verify the repository's metadata: %w", err)
	}
	// Follow root rotations made elsewhere.
	if b, _ := store.LoadMetadata(tuf.RoleRoot); b != nil {
		_ = os.WriteFile(filepath.Join(dir, rootJSONFile), b, 0o644)
	}
	b, _ := store.LoadMetadata(tuf.RoleTargets)
	return tuf.ParseTargets(b)
}

func onlineKeys(ctx context.Context, c *client) (snap, ts ed25519.PublicKey, err error) {
	var keys map[string]struct {
		Public string `json:"public"`
	}
	if err := c.get(ctx, "/api/v1/trust/online-keys", &keys); err != nil {
		return nil, nil, err
	}
	dec := func(role string) (ed25519.PublicKey, error) {
		b, err := hex.DecodeString(keys[role].Public)
		if err != nil || len(b) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("control plane's online %s key is not ed25519 hex", role)
		}
		return b, nil
	}
	if snap, err = dec(tuf.RoleSnapshot); err != nil {
		return nil, nil, err
	}
	ts, err = dec(tuf.RoleTimestamp)
	return snap, ts, err
}

func keysInit(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlags("keys init")
	dir := fs.String("dir", defaultKeyDir(), "directory for the offline keys and root.json (env STARLING_KEYS)")
	server := fs.String("server", defaultServer(), "control plane URL (env STARLING_SERVER)")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	for _, f := range []string{rootKeyFile, targetsKeyFile} {
		if _, err := os.Stat(filepath.Join(*dir, f)); err == nil {
			return fmt.Errorf("keys init: %s already exists; refusing to overwrite a signing key (move it away first)", filepath.Join(*dir, f))
		}
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return fmt.Errorf("keys init: %w", err)
	}
	c := &client{base: *server}
	snap, ts, err := onlineKeys(ctx, c)
	if err != nil {
		return fmt.Errorf("keys init: %w", err)
	}
	rootKey, err := trust.GenerateKey()
	if err != nil {
		return err
	}
	targetsKey, err := trust.GenerateKey()
	if err != nil {
		return err
	}
	md, err := tuf.NewRoot(tuf.RootSpec{Root: []ed25519.PublicKey{rootKey.Public()}, Targets: []ed25519.PublicKey{targetsKey.Public()},
		Snapshot: []ed25519.PublicKey{snap}, Timestamp: []ed25519.PublicKey{ts}})
	if err != nil {
		return err
	}
	root, err := tuf.Sign(md, rootKey)
	if err != nil {
		return err
	}
	targets, err := tuf.Sign(tuf.NewTargets(1, time.Now().Add(tuf.DefaultTargetsExpiry)), targetsKey)
	if err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		k    *trust.PrivateKey
	}{{rootKeyFile, rootKey}, {targetsKeyFile, targetsKey}} {
		if err := trust.WriteKeyFile(filepath.Join(*dir, f.name), f.k.PrivateFile(), 0o600); err != nil {
			return fmt.Errorf("keys init: %w", err)
		}
	}
	if err := os.WriteFile(filepath.Join(*dir, rootJSONFile), root, 0o644); err != nil {
		return fmt.Errorf("keys init: %w", err)
	}
	if err := c.postJSON(ctx, "/api/v1/trust/root", root); err != nil {
		return fmt.Errorf("keys init: upload root: %w", err)
	}
	if err := c.postJSON(ctx, "/api/v1/trust/targets", targets); err != nil {
		return fmt.Errorf("keys init: upload targets: %w", err)
	}
	fmt.Fprintf(out, "root key %.16s and targets key %.16s in %s (keep offline)\nroot.json version 1: %s (install on devices as --trust-root)\n",
		tuf.KeyID(rootKey.Public()), tuf.KeyID(targetsKey.Public()), *dir, filepath.Join(*dir, rootJSONFile))
	return nil
}

// keysRotate replaces the root or targets key: a new root version names
// the new key and is signed by the old root key (and the new one, for a
// root rotation); devices follow it one version at a time. A targets
// rotation re-signs the current targets with the new key.
func keysRotate(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlags("keys rotate")
	dir := fs.String("dir", defaultKeyDir(), "key directory (env STARLING_KEYS)")
	server := fs.String("server", defaultServer(), "control plane URL (env STARLING_SERVER)")
	role := fs.String("role", "", "key to replace: root or targets (required)")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	if *role != tuf.RoleRoot && *role != tuf.RoleTargets {
		return fmt.Errorf("%w: keys rotate: --role must be root or targets", errUsage)
	}
	c := &client{base: *server}
	targets, err := currentTargets(ctx, c, *dir)
	if err != nil {
		return fmt.Errorf("keys rotate: %w", err)
	}
	rootJSON, err := os.ReadFile(filepath.Join(*dir, rootJSONFile))
	if err != nil {
		return fmt.Errorf("keys rotate: %w", err)
	}
	cur, err := tuf.ParseRoot(rootJSON)
	if err != nil {
		return fmt.Errorf("keys rotate: %w", err)
	}
	rootKey, err := trust.ReadPrivateKey(filepath.Join(*dir, rootKeyFile))
	if err != nil {
		return fmt.Errorf("keys rotate: %w", err)
	}
	targetsKey, err := trust.ReadPrivateKey(filepath.Join(*dir, targetsKeyFile))
	if err != nil {
		return fmt.Errorf("keys rotate: %w", err)
	}
	newKey, err := trust.GenerateKey()
	if err != nil {
		return err
	}
	online := func(r string) []ed25519.PublicKey {
		id := cur.Signed.Roles[r].KeyIDs[0]
		b, _ := hex.DecodeString(cur.Signed.Keys[id].Value.PublicKey)
		return []ed25519.PublicKey{b}
	}
	spec := tuf.RootSpec{Version: cur.Signed.Version + 1, Root: []ed25519.PublicKey{rootKey.Public()}, Targets: []ed25519.PublicKey{targetsKey.Public()},
		Snapshot: online(tuf.RoleSnapshot), Timestamp: online(tuf.RoleTimestamp)}
	signers := []*trust.PrivateKey{rootKey}
	keyFile := filepath.Join(*dir, targetsKeyFile)
	if *role == tuf.RoleRoot {
		spec.Root = []ed25519.PublicKey{newKey.Public()}
		signers = append(signers, newKey)
		keyFile = filepath.Join(*dir, rootKeyFile)
	} else {
		spec.Targets = []ed25519.PublicKey{newKey.Public()}
	}
	md, err := tuf.NewRoot(spec)
	if err != nil {
		return err
	}
	root, err := tuf.Sign(md, signers...)
	if err != nil {
		return err
	}
	// Keep the old key until the new root is accepted.
	if err := trust.WriteKeyFile(keyFile+".new", newKey.PrivateFile(), 0o600); err != nil {
		return fmt.Errorf("keys rotate: %w", err)
	}
	if err := c.postJSON(ctx, "/api/v1/trust/root", root); err != nil {
		os.Remove(keyFile + ".new")
		return fmt.Errorf("keys rotate: upload root version %d: %w", spec.Version, err)
	}
	if err := os.Rename(keyFile, keyFile+".old"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("keys rotate: %w", err)
	}
	if err := os.Rename(keyFile+".new", keyFile); err != nil {
		return fmt.Errorf("keys rotate: %w", err)
	}
	if err := os.WriteFile(filepath.Join(*dir, rootJSONFile), root, 0o644); err != nil {
		return fmt.Errorf("keys rotate: %w", err)
	}
	if *role == tuf.RoleTargets {
		targets.Signed.Version++
		b, err := tuf.Sign(targets, newKey)
		if err != nil {
			return err
		}
		if err := c.postJSON(ctx, "/api/v1/trust/targets", b); err != nil {
			return fmt.Errorf("keys rotate: upload targets re-signed with the new key: %w", err)
		}
	}
	fmt.Fprintf(out, "%s key rotated to %.16s; root version %d uploaded (devices follow it on their next refresh); old key kept as %s.old\n",
		*role, tuf.KeyID(newKey.Public()), spec.Version, keyFile)
	return nil
}
