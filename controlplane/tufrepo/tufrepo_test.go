package tufrepo

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/starling-edge/starling/shared/trust"
	"github.com/starling-edge/starling/shared/trust/tuf"
)

type repoFetcher struct{ r *Repo }

func (f repoFetcher) FetchMetadata(_ context.Context, name string, _ int64) ([]byte, error) {
	b, err := f.r.File(name)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("%v: %w", err, tuf.ErrNotFound)
	}
	return b, err
}

func key(t *testing.T) *trust.PrivateKey {
	t.Helper()
	k, err := trust.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func signedRoot(t *testing.T, r *Repo, version int64, rootKeys []*trust.PrivateKey, targets *trust.PrivateKey, snap, ts ed25519.PublicKey, signers ...*trust.PrivateKey) []byte {
	t.Helper()
	spec := tuf.RootSpec{Version: version, Targets: []ed25519.PublicKey{targets.Public()}, Snapshot: []ed25519.PublicKey{snap}, Timestamp: []ed25519.PublicKey{ts}}
	for _, k := range rootKeys {
		spec.Root = append(spec.Root, k.Public())
	}
	md, err := tuf.NewRoot(spec)
	if err != nil {
		t.Fatal(err)
	}
	b, err := tuf.Sign(md, signers...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func signedTargets(t *testing.T, version int64, expires time.Time, k *trust.PrivateKey, names ...string) []byte {
	t.Helper()
	md := tuf.NewTargets(version, expires)
	for _, n := range names {
		if err := tuf.SetTarget(md, tuf.ModelPath("demo", n, ""), 3, trust.Digest([]byte(n)),
			tuf.Custom{Kind: tuf.KindModel, Name: "demo", Version: n, Format: "tflite"}); err != nil {
			t.Fatal(err)
		}
	}
	b, err := tuf.Sign(md, k)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRepository(t *testing.T) {
	now := time.Now()
	clock := func() time.Time { return now }
	dir := t.TempDir()
	r, err := Open(Options{Dir: dir, TimestampExpiry: time.Hour, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	snap, ts := r.OnlineKeys()
	rootKey, targetsKey := key(t), key(t)

	if _, err := r.PutTargets(signedTargets(t, 1, now.Add(time.Hour), targetsKey)); !errors.Is(err, ErrNoRoot) {
		t.Fatalf("targets before root: %v", err)
	}
	for _, tc := range []struct {
		name string
		data []byte
		want error
	}{
		{"garbage", []byte("{"), trust.ErrMalformed},
		{"foreign online keys", signedRoot(t, r, 1, []*trust.PrivateKey{rootKey}, targetsKey, key(t).Public(), ts, rootKey), ErrRejected},
		{"version 2 first", signedRoot(t, r, 2, []*trust.PrivateKey{rootKey}, targetsKey, snap, ts, rootKey), ErrConflict},
		{"unsigned", signedRoot(t, r, 1, []*trust.PrivateKey{rootKey}, targetsKey, snap, ts), trust.ErrThreshold},
	} {
		if _, err := r.SetRoot(tc.data); !errors.Is(err, tc.want) {
			t.Errorf("root %s: err %v, want %v", tc.name, err, tc.want)
		}
	}
	root1 := signedRoot(t, r, 1, []*trust.PrivateKey{rootKey}, targetsKey, snap, ts, rootKey)
	if _, err := r.SetRoot(root1); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		data []byte
		want error
	}{
		{"unknown key", signedTargets(t, 1, now.Add(time.Hour), key(t), "1"), trust.ErrUnknownKey},
		{"skipped version", signedTargets(t, 2, now.Add(time.Hour), targetsKey, "1"), ErrConflict},
		{"expired", signedTargets(t, 1, now.Add(-time.Hour), targetsKey, "1"), trust.ErrExpired},
	} {
		if _, err := r.PutTargets(tc.data); !errors.Is(err, tc.want) {
			t.Errorf("targets %s: err %v, want %v", tc.name, err, tc.want)
		}
	}
	if _, err := r.PutTargets(signedTargets(t, 1, now.Add(time.Hour), targetsKey, "1")); err != nil {
		t.Fatal(err)
	}
	c, err := tuf.NewClient(tuf.ClientOptions{Root: root1, Store: &tuf.MemoryStore{}, Fetcher: repoFetcher{r}, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Model("demo", "1", "", "dev"); err != nil {
		t.Fatal(err)
	}

	// Renewal: nothing is due at once; past half the timestamp's life a
	// new timestamp appears, and the device accepts it.
	v := c.Versions().Timestamp
	if err := r.Renew(); err != nil {
		t.Fatal(err)
	}
	now = now.Add(40 * time.Minute)
	if err := r.Renew(); err != nil {
		t.Fatal(err)
	}
	if err := c.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := c.Versions().Timestamp; got != v+1 {
		t.Fatalf("timestamp version %d after renewal, want %d", got, v+1)
	}

	// Reopen: the same keys and metadata.
	r2, err := Open(Options{Dir: dir, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	if s2, _ := r2.OnlineKeys(); !s2.Equal(snap) {
		t.Fatal("online key changed across reopen")
	}
	if r2.Targets().Signed.Version != 1 {
		t.Fatal("targets lost across reopen")
	}
	for _, name := range []string{"root.json", "1.root.json", "1.targets.json", "1.snapshot.json", "timestamp.json"} {
		if _, err := r2.File(name); err != nil {
			t.Errorf("File(%s): %v", name, err)
		}
	}
	for _, name := range []string{"../keys/snapshot.key", "2.root.json", "x.json"} {
		if _, err := r2.File(name); !errors.Is(err, ErrNotFound) {
			t.Errorf("File(%s): %v, want ErrNotFound", name, err)
		}
	}
}
