package tuf

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/starling-edge/starling/shared/trust"
)

var t0 = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

func mustKey(t testing.TB) *trust.PrivateKey {
	t.Helper()
	k, err := trust.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// testRepo is a repository as the operator and the control plane keep it:
// offline root and targets keys, online snapshot and timestamp keys, and the
// files it serves through a MapFetcher.
type testRepo struct {
	t                                testing.TB
	root, targets, snap, ts          []*trust.PrivateKey
	rootVersion                      int64
	targetsThreshold                 int
	serve                            *MapFetcher
	targetsMD                        map[string]entry
	targetsVersion, snapV, tsV       int64
	targetsExpiry, snapExp, tsExpiry time.Duration
	now                              time.Time
}

type entry struct {
	data []byte
	c    Custom
}

func newRepo(t testing.TB) *testRepo {
	r := &testRepo{t: t, root: []*trust.PrivateKey{mustKey(t)}, targets: []*trust.PrivateKey{mustKey(t)},
		snap: []*trust.PrivateKey{mustKey(t)}, ts: []*trust.PrivateKey{mustKey(t)}, targetsThreshold: 1,
		serve: &MapFetcher{}, targetsMD: map[string]entry{}, now: t0,
		targetsExpiry: DefaultTargetsExpiry, snapExp: DefaultSnapshotExpiry, tsExpiry: DefaultTimestampExpiry}
	r.signRoot(r.root)
	return r
}

func pubs(keys []*trust.PrivateKey) (out []ed25519.PublicKey) {
	for _, k := range keys {
		out = append(out, k.Public())
	}
	return out
}

// signRoot publishes the next root version with the current keys, signed
// by signers.
func (r *testRepo) signRoot(signers []*trust.PrivateKey) []byte {
	r.rootVersion++
	spec := RootSpec{Version: r.rootVersion, Expires: r.now.Add(DefaultRootExpiry), TargetsThreshold: r.targetsThreshold}
	for _, k := range r.root {
		spec.Root = append(spec.Root, k.Public())
	}
	for _, k := range r.targets {
		spec.Targets = append(spec.Targets, k.Public())
	}
	spec.Snapshot = append(spec.Snapshot, r.snap[0].Public())
	spec.Timestamp = append(spec.Timestamp, r.ts[0].Public())
	md, err := NewRoot(spec)
	if err != nil {
		r.t.Fatal(err)
	}
	b, err := Sign(md, signers...)
	if err != nil {
		r.t.Fatal(err)
	}
	r.serve.Set(fmt.Sprintf("%d.root.json", r.rootVersion), b)
	return b
}

func (r *testRepo) rootFile(v int64) []byte { return r.serve.Get(fmt.Sprintf("%d.root.json", v)) }

// signTargets signs the current targets as the next version with keys.
func (r *testRepo) signTargets(keys ...*trust.PrivateKey) []byte {
	r.targetsVersion++
	md := NewTargets(r.targetsVersion, r.now.Add(r.targetsExpiry))
	for path, e := range r.targetsMD {
		if err := SetTarget(md, path, int64(len(e.data)), trust.Digest(e.data), e.c); err != nil {
			r.t.Fatal(err)
		}
	}
	b, err := Sign(md, keys...)
	if err != nil {
		r.t.Fatal(err)
	}
	r.serve.Set(fmt.Sprintf("%d.targets.json", r.targetsVersion), b)
	return b
}

// online signs a new snapshot (naming targets version tv) and timestamp
// with the given online keys.
func (r *testRepo) online(tv int64, snapKey, tsKey *trust.PrivateKey) {
	r.snapV++
	sb, err := Sign(NewSnapshot(r.snapV, r.now.Add(r.snapExp), tv), snapKey)
	if err != nil {
		r.t.Fatal(err)
	}
	r.serve.Set(fmt.Sprintf("%d.snapshot.json", r.snapV), sb)
	r.tsV++
	tb, err := Sign(NewTimestamp(r.tsV, r.now.Add(r.tsExpiry), r.snapV), tsKey)
	if err != nil {
		r.t.Fatal(err)
	}
	r.serve.Set("timestamp.json", tb)
}

// publish adds a model target and publishes a full new repository version.
func (r *testRepo) publish(name, version string) []byte {
	data := []byte("artifact " + name + ":" + version)
	r.targetsMD[ModelPath(name, version, "")] = entry{data, Custom{Kind: KindModel, Name: name, Version: version, Format: "tflite"}}
	r.signTargets(r.targets...)
	r.online(r.targetsVersion, r.snap[0], r.ts[0])
	return data
}

// device is a client with its own store, as one agent holds it.
type device struct {
	c     *Client
	store *MemoryStore
	now   *time.Time
}

func (r *testRepo) device() *device {
	d := &device{store: &MemoryStore{}, now: new(time.Time)}
	*d.now = r.now
	c, err := NewClient(ClientOptions{Root: r.rootFile(1), Store: d.store, Fetcher: r.serve, Now: func() time.Time { return *d.now }})
	if err != nil {
		r.t.Fatal(err)
	}
	d.c = c
	return d
}

// servedModel is what a device would serve: the verified target of
// demo:version and the trusted versions.
func (d *device) serves(t *testing.T, version string) {
	t.Helper()
	tg, err := d.c.Model("demo", version, "", "1.0.0")
	if err != nil {
		t.Fatalf("demo:%s no longer verified: %v", version, err)
	}
	if tg.Custom.Version != version {
		t.Fatalf("target = %+v", tg.Custom)
	}
}

func wantCheck(t *testing.T, err error, sentinel error, check string) {
	t.Helper()
	if !errors.Is(err, sentinel) {
		t.Fatalf("err = %v, want %v", err, sentinel)
	}
	if got := trust.Check(err); got != check {
		t.Fatalf("Check = %q, want %q (err %v)", got, check, err)
	}
}

// TestAttackCatalogue has one case per attack class. Each starts from a
// device that trusts demo:1 from a good repository, mounts the attack,
// refreshes, and asserts the exact rejection and that the device's trusted
// view (what it would serve) is unchanged.
func TestAttackCatalogue(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		attack  func(t *testing.T, r *testRepo, d *device)
		want    error
		check   string
		version string // desired model version after the attack
	}{
		{"rollback: an older, validly signed repository version", func(t *testing.T, r *testRepo, d *device) {
			oldTS := r.serve.Get("timestamp.json")
			r.publish("demo", "2")
			if err := d.c.Refresh(ctx); err != nil {
				t.Fatal(err)
			}
			r.serve.Set("timestamp.json", oldTS) // replay version 1
		}, trust.ErrRollback, "rollback", "2"},
		{"rollback: snapshot that lowers the targets version", func(t *testing.T, r *testRepo, d *device) {
			r.publish("demo", "2")
			if err := d.c.Refresh(ctx); err != nil {
				t.Fatal(err)
			}
			// Stolen-online-key style: new snapshot+timestamp naming targets 1.
			r.online(1, r.snap[0], r.ts[0])
		}, trust.ErrRollback, "rollback", "2"},
		{"freeze: the same timestamp, served past its expiry", func(t *testing.T, r *testRepo, d *device) {
			*d.now = d.now.Add(DefaultTimestampExpiry + time.Minute)
		}, trust.ErrFreeze, "freeze", "1"},
		{"freeze: a newer timestamp that has already expired", func(t *testing.T, r *testRepo, d *device) {
			r.tsExpiry = -time.Minute
			r.publish("demo", "2")
		}, trust.ErrFreeze, "freeze", "1"},
		{"mix-and-match: old targets under a newer snapshot", func(t *testing.T, r *testRepo, d *device) {
			old := r.serve.Get("1.targets.json")
			r.publish("demo", "2")
			r.serve.Set("2.targets.json", old)
		}, trust.ErrMixAndMatch, "mix-and-match", "2"},
		{"mix-and-match: old snapshot under a newer timestamp", func(t *testing.T, r *testRepo, d *device) {
			old := r.serve.Get("1.snapshot.json")
			r.publish("demo", "2")
			r.serve.Set("2.snapshot.json", old)
		}, trust.ErrMixAndMatch, "mix-and-match", "2"},
		{"wrong threshold: targets signed by one of two required keys", func(t *testing.T, r *testRepo, d *device) {
			r.targets = append(r.targets, mustKey(t))
			r.targetsThreshold = 2
			r.signRoot(r.root) // root 2 requires two targets keys
			r.targetsMD[ModelPath("demo", "2", "")] = entry{[]byte("v2"), Custom{Kind: KindModel, Name: "demo", Version: "2", Format: "tflite"}}
			r.signTargets(r.targets[0]) // only one of them
			r.online(r.targetsVersion, r.snap[0], r.ts[0])
		}, trust.ErrThreshold, "threshold", "2"},
		{"wrong threshold: a new root signed by one of the two root keys it requires", func(t *testing.T, r *testRepo, d *device) {
			r.root = append(r.root, mustKey(t))
			spec := RootSpec{Version: 2, Expires: r.now.Add(DefaultRootExpiry), Root: pubs(r.root), RootThreshold: 2,
				Targets: pubs(r.targets), Snapshot: pubs(r.snap), Timestamp: pubs(r.ts)}
			md, err := NewRoot(spec)
			if err != nil {
				t.Fatal(err)
			}
			b, err := Sign(md, r.root[0]) // the old root's key alone
			if err != nil {
				t.Fatal(err)
			}
			r.serve.Set("2.root.json", b)
		}, trust.ErrThreshold, "threshold", "1"},
		{"unknown key: a new root signed only by a key the old root does not trust", func(t *testing.T, r *testRepo, d *device) {
			r.root = append(r.root, mustKey(t))
			r.signRoot(r.root[1:]) // old root key missing
		}, trust.ErrUnknownKey, "unknown-key", "1"},
		{"expired metadata: targets past their expiry", func(t *testing.T, r *testRepo, d *device) {
			r.targetsExpiry = time.Hour
			r.publish("demo", "2")
			*d.now = d.now.Add(2 * time.Hour)
			r.now = *d.now
			r.online(r.targetsVersion, r.snap[0], r.ts[0]) // fresh timestamp, stale targets
		}, trust.ErrExpired, "expiry", "2"},
		{"unknown key: targets signed by a key root does not name", func(t *testing.T, r *testRepo, d *device) {
			r.targetsMD[ModelPath("demo", "2", "")] = entry{[]byte("v2"), Custom{Kind: KindModel, Name: "demo", Version: "2", Format: "tflite"}}
			r.signTargets(mustKey(t))
			r.online(r.targetsVersion, r.snap[0], r.ts[0])
		}, trust.ErrUnknownKey, "unknown-key", "2"},
		{"unknown key: timestamp signed by a key root does not name", func(t *testing.T, r *testRepo, d *device) {
			r.publish("demo", "2")
			tb, _ := Sign(NewTimestamp(r.tsV+1, r.now.Add(time.Hour), r.snapV), mustKey(t))
			r.serve.Set("timestamp.json", tb)
		}, trust.ErrUnknownKey, "unknown-key", "2"},
		{"signature: a trusted key's signature over tampered targets", func(t *testing.T, r *testRepo, d *device) {
			r.publish("demo", "2")
			b := r.serve.Get("2.targets.json")
			r.serve.Set("2.targets.json", []byte(strings.Replace(string(b), `"version":"2"`, `"version":"3"`, 1)))
			r.online(2, r.snap[0], r.ts[0]) // snapshot without hashes, so the signature check is reached
		}, trust.ErrSignature, "signature", "2"},
		{"stolen online keys: attacker-signed snapshot and timestamp over forged targets", func(t *testing.T, r *testRepo, d *device) {
			// The attacker holds the control plane's snapshot and
			// timestamp keys and signs targets with them.
			r.targetsMD[ModelPath("demo", "666", "")] = entry{[]byte("evil"), Custom{Kind: KindModel, Name: "demo", Version: "666", Format: "tflite"}}
			r.signTargets(r.snap[0], r.ts[0])
			r.online(r.targetsVersion, r.snap[0], r.ts[0])
		}, trust.ErrUnknownKey, "unknown-key", "666"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRepo(t)
			r.publish("demo", "1")
			d := r.device()
			if err := d.c.Refresh(ctx); err != nil {
				t.Fatal(err)
			}
			d.serves(t, "1")
			tt.attack(t, r, d)
			before := d.c.Versions()
			err := d.c.Refresh(ctx)
			wantCheck(t, err, tt.want, tt.check)
			if after := d.c.Versions(); after != before {
				t.Fatalf("trusted versions changed by a rejected refresh: %+v -> %+v", before, after)
			}
			d.serves(t, "1")
			if tt.version != "1" {
				if _, err := d.c.Model("demo", tt.version, "", "1.0.0"); err == nil && tt.version == "666" {
					t.Fatal("forged target demo:666 is trusted")
				}
			}
			// A fresh device on the attacked repository refuses too.
			fresh := r.device()
			*fresh.now = *d.now
			if err := fresh.c.Refresh(ctx); err == nil && tt.check != "rollback" && tt.check != "freeze" {
				t.Fatalf("a fresh device accepted the attacked repository")
			}
		})
	}
}

// TestArbitraryArtifact: a device is asked for a target the operator never
// signed, or handed bytes other than the signed ones.
func TestArbitraryArtifact(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t)
	art := r.publish("demo", "1")
	d := r.device()
	if err := d.c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	_, err := d.c.Model("demo", "9", "", "1.0.0")
	wantCheck(t, err, trust.ErrNoTarget, "unknown-target")
	_, err = d.c.Model("demo", "1", "int8", "1.0.0")
	wantCheck(t, err, trust.ErrNoTarget, "unknown-target")

	tg, err := d.c.Model("demo", "1", "", "1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	if err := trust.VerifyArtifact(tg.Model(), art); err != nil {
		t.Fatalf("signed artifact: %v", err)
	}
	evil := append([]byte(nil), art...)
	evil[0] ^= 1
	wantCheck(t, trust.VerifyArtifact(tg.Model(), evil), trust.ErrDigest, "digest")
	wantCheck(t, trust.VerifyArtifact(tg.Model(), append(art, 0)), trust.ErrSize, "size")
}

// TestMinAgentVersion: a target that needs a newer agent is refused.
func TestMinAgentVersion(t *testing.T) {
	r := newRepo(t)
	r.targetsMD[ModelPath("demo", "1", "")] = entry{[]byte("x"), Custom{Kind: KindModel, Name: "demo", Version: "1", Format: "tflite", MinAgentVersion: "2.1"}}
	r.signTargets(r.targets...)
	r.online(r.targetsVersion, r.snap[0], r.ts[0])
	d := r.device()
	if err := d.c.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, err := d.c.Model("demo", "1", "", "2.0.9")
	wantCheck(t, err, trust.ErrAgentVersion, "agent-version")
	for _, v := range []string{"2.1", "v2.1.0", "2.10", "dev"} {
		if _, err := d.c.Model("demo", "1", "", v); err != nil {
			t.Errorf("agent %s: %v", v, err)
		}
	}
}

// TestRootRotation: the operator rotates the root key twice and the
// targets key once; a device that trusts root 1 walks 2 then 3, one
// version at a time, and stores each.
func TestRootRotation(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t)
	r.publish("demo", "1")
	d := r.device()
	if err := d.c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	// Root 2: new root key, signed by old and new.
	old := r.root
	r.root = []*trust.PrivateKey{mustKey(t)}
	r.signRoot(append(old, r.root...))
	// Root 3: new targets key; targets re-signed with it.
	r.targets = []*trust.PrivateKey{mustKey(t)}
	r.signRoot(r.root)
	r.publish("demo", "2")

	var walked []string
	d.c.opts.Fetcher = fetchLog{r.serve, &walked}
	if err := d.c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if v := d.c.Versions(); v.Root != 3 {
		t.Fatalf("root version %d, want 3", v.Root)
	}
	want := "2.root.json 3.root.json 4.root.json timestamp.json"
	if got := strings.Join(walked[:4], " "); got != want {
		t.Fatalf("fetched %q, want %q first", got, want)
	}
	stored, _ := d.store.LoadMetadata(RoleRoot)
	if md, err := ParseRoot(stored); err != nil || md.Signed.Version != 3 {
		t.Fatalf("stored root: %v", err)
	}
	d.serves(t, "2")

	// A device that was offline through all of it, with only root 1.
	late := r.device()
	if err := late.c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	late.serves(t, "2")
}

type fetchLog struct {
	f   Fetcher
	log *[]string
}

func (l fetchLog) FetchMetadata(ctx context.Context, name string, n int64) ([]byte, error) {
	*l.log = append(*l.log, name)
	return l.f.FetchMetadata(ctx, name, n)
}

// TestOfflineRecovery: a device whose trusted timestamp (and snapshot)
// expired while it was offline accepts the repository's fresh ones on its
// own; so does one whose timestamp key was rotated meanwhile.
func TestOfflineRecovery(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t)
	r.publish("demo", "1")
	d := r.device()
	if err := d.c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	r.now = r.now.Add(30 * 24 * time.Hour)
	*d.now = r.now
	r.online(r.targetsVersion, r.snap[0], r.ts[0]) // the control plane kept re-signing
	if err := d.c.Refresh(ctx); err != nil {
		t.Fatalf("after a month offline: %v", err)
	}
	d.serves(t, "1")

	// Timestamp key rotated in root 2 while the device was away.
	r.ts = []*trust.PrivateKey{mustKey(t)}
	r.snap = []*trust.PrivateKey{mustKey(t)}
	r.signRoot(r.root)
	r.online(r.targetsVersion, r.snap[0], r.ts[0])
	if err := d.c.Refresh(ctx); err != nil {
		t.Fatalf("after an online key rotation: %v", err)
	}
	if v := d.c.Versions(); v.Root != 2 {
		t.Fatalf("root %d, want 2", v.Root)
	}
}

// TestPersistence: trusted metadata survives a restart (a new client on
// the same store), so a rollback is refused even after one.
func TestPersistence(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t)
	r.publish("demo", "1")
	d := r.device()
	if err := d.c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	oldTS := r.serve.Get("timestamp.json")
	r.publish("demo", "2")
	if err := d.c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	c2, err := NewClient(ClientOptions{Root: r.rootFile(1), Store: d.store, Fetcher: r.serve, Now: func() time.Time { return *d.now }})
	if err != nil {
		t.Fatal(err)
	}
	r.serve.Set("timestamp.json", oldTS)
	wantCheck(t, c2.Refresh(ctx), trust.ErrRollback, "rollback")
}

func TestNewClientOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    ClientOptions
	}{
		{"no store", ClientOptions{Root: []byte("{}"), Fetcher: &MapFetcher{}}},
		{"no root", ClientOptions{Store: &MemoryStore{}, Fetcher: &MapFetcher{}}},
		{"garbage root", ClientOptions{Root: []byte("{"), Store: &MemoryStore{}, Fetcher: &MapFetcher{}}},
	} {
		if _, err := NewClient(tc.o); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
}
