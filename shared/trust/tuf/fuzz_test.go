package tuf

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/starling-edge/starling/shared/trust"
)

// seedRepo returns a small good repository's files for fuzz seeds.
func seedRepo(f *testing.F) *testRepo {
	r := newRepo(f)
	r.publish("demo", "1")
	return r
}

// FuzzParseMetadata: parsing any bytes as any role never panics, and an
// error always names the malformed check.
func FuzzParseMetadata(f *testing.F) {
	r := seedRepo(f)
	for _, name := range []string{"1.root.json", "1.targets.json", "1.snapshot.json", "timestamp.json"} {
		f.Add(r.serve.Get(name))
	}
	f.Add([]byte(`{"signed":{"_type":"root"},"signatures":[]}`))
	f.Add([]byte(`{"signed":{"_type":"targets","targets":{"a":{"length":-1,"hashes":{}}}},"signatures":[{"keyid":"x","sig":"zz"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		check := func(err error) {
			if err != nil && !errors.Is(err, trust.ErrMalformed) {
				t.Fatalf("parse error without the malformed check: %v", err)
			}
		}
		_, err := ParseRoot(data)
		check(err)
		_, err = ParseTargets(data)
		check(err)
		_, err = ParseSnapshot(data)
		check(err)
		_, err = ParseTimestamp(data)
		check(err)
	})
}

// FuzzRefresh: a device that trusts a good repository is served fuzzed
// timestamp, snapshot and targets files. Refresh never panics; when it
// fails the error names a check and the trusted versions stay; when it
// succeeds the trusted targets are still the operator's (demo:1 verifies).
//
// Run it with a bounded minimization time and a test timeout past the
// fuzz time:
//
//	go test -run '^$' -fuzz '^FuzzRefresh$' -fuzztime 10m -fuzzminimizetime 5s -parallel 1 -timeout 20m ./shared/trust/tuf
//
// Each run costs about 2 ms (a client loads and verifies the root, then
// verifies timestamp, snapshot and targets), and the fuzzing engine
// minimizes every input that finds new coverage: quadratic in the size of
// three inputs of hundreds of bytes, for up to -fuzzminimizetime (default
// 60 s) each. Meanwhile the progress line says 0 execs/sec (minimizing
// runs are counted when it ends) and, with -parallel 1, nothing else is
// fuzzed: that is the stall seen with the defaults, not a hang. -timeout
// bounds the whole run, so its default (10m) ends a 10m fuzz in a panic.
func FuzzRefresh(f *testing.F) {
	r := seedRepo(f)
	f.Add(r.serve.Get("timestamp.json"), r.serve.Get("1.snapshot.json"), r.serve.Get("1.targets.json"))
	f.Add([]byte("{}"), []byte("[]"), []byte("null"))
	good := r.device()
	if err := good.c.Refresh(context.Background()); err != nil {
		f.Fatal(err)
	}
	before := good.c.Versions()
	root := r.rootFile(1)
	f.Fuzz(func(t *testing.T, ts, snap, targets []byte) {
		store := &MemoryStore{}
		for _, role := range []string{RoleRoot, RoleTimestamp, RoleSnapshot, RoleTargets} {
			b, _ := good.store.LoadMetadata(role)
			store.StoreMetadata(role, b)
		}
		serve := &MapFetcher{}
		serve.Set("timestamp.json", ts)
		for _, v := range []string{"1", "2"} {
			serve.Set(v+".snapshot.json", snap)
			serve.Set(v+".targets.json", targets)
		}
		c, err := NewClient(ClientOptions{Root: root, Store: store, Fetcher: serve,
			Now: func() time.Time { return t0.Add(time.Minute) }})
		if err != nil {
			t.Fatal(err)
		}
		c.targets, c.version = good.c.targets, before // as after the good refresh
		err = c.Refresh(context.Background())
		if err != nil {
			if trust.Check(err) == "" && !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrNotFound) {
				t.Fatalf("refresh error names no check: %v", err)
			}
			if c.Versions() != before {
				t.Fatalf("versions changed on a failed refresh")
			}
		}
		if _, err := c.Model("demo", "1", "", "1.0.0"); err != nil {
			t.Fatalf("demo:1 no longer verified: %v", err)
		}
	})
}
