package cache

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/starling-edge/starling/shared/trust"
	"github.com/starling-edge/starling/shared/wire"
)

// open opens a cache in dir and checks its consistency when the test ends.
func open(tb testing.TB, path string) *Cache {
	tb.Helper()
	c, err := Open(Options{Path: path})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := c.Check(); err != nil && !errors.Is(err, bolt.ErrDatabaseNotOpen) {
			tb.Errorf("consistency: %v", err)
		}
		c.Close()
	})
	return c
}

func artifact(version string, n int) ([]byte, *trust.ModelMetadata) {
	data := bytes.Repeat([]byte("model-"+version+"|"), n)
	return data, &trust.ModelMetadata{Name: "demo", Version: version, Format: "tflite",
		Digest: trust.Digest(data), Size: int64(len(data))}
}

// store puts a version through fetch -> verified, in chunks of size step.
func store(tb testing.TB, c *Cache, version string, step int) *trust.ModelMetadata {
	tb.Helper()
	data, md := artifact(version, 100)
	if _, err := c.Put(md, []byte(`{"env":"`+version+`"}`)); err != nil {
		tb.Fatal(err)
	}
	for off := 0; off < len(data); off += step {
		if err := c.PutChunk(md.Digest, int64(off), data[off:min(off+step, len(data))]); err != nil {
			tb.Fatal(err)
		}
	}
	if _, err := c.Complete("demo", version); err != nil {
		tb.Fatal(err)
	}
	return md
}

func state(tb testing.TB, c *Cache, version string) string {
	tb.Helper()
	r, err := c.Get("demo", version)
	if err != nil {
		tb.Fatal(err)
	}
	return r.State
}

func TestActivateRotatesPreviousAndRetired(t *testing.T) {
	c := open(t, filepath.Join(t.TempDir(), "cache.db"))
	for _, v := range []string{"1", "2", "3"} {
		store(t, c, v, 97)
		if got := state(t, c, v); got != wire.StateVerified {
			t.Fatalf("v%s after Complete: %s, want verified", v, got)
		}
		if err := c.Activate("demo", v); err != nil {
			t.Fatal(err)
		}
		if err := c.Check(); err != nil {
			t.Fatal(err)
		}
	}
	for v, want := range map[string]string{"1": wire.StateRetired, "2": wire.StatePrevious, "3": wire.StateActive} {
		if got := state(t, c, v); got != want {
			t.Errorf("v%s: %s, want %s", v, got, want)
		}
	}
	act, err := c.Active()
	if err != nil || len(act) != 1 || act[0].Version != "3" {
		t.Fatalf("Active() = %+v, %v; want v3", act, err)
	}
	data, _ := artifact("3", 100)
	got, err := c.Artifact(act[0].Digest)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Artifact: %d bytes, %v", len(got), err)
	}
}

func TestResumeProgressSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cache.db")
	data, md := artifact("1", 1000)
	c, err := Open(Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(md, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	// Out of order with a gap: progress is the contiguous prefix.
	for _, off := range []int{0, 2048, 1024} {
		if err := c.PutChunk(md.Digest, int64(off), data[off:off+1024]); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.PutChunk(md.Digest, 5000, data[5000:6000]); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Complete("demo", "1"); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("Complete with a gap: %v, want ErrIncomplete", err)
	}
	c.Close()

	c = open(t, path)
	n, err := c.Progress(md.Digest)
	if err != nil || n != 3072 {
		t.Fatalf("Progress after reopen = %d, %v; want 3072", n, err)
	}
	// Resume with a different, overlapping chunk size.
	for off := 3000; off < len(data); off += 1500 {
		if err := c.PutChunk(md.Digest, int64(off), data[off:min(off+1500, len(data))]); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Complete("demo", "1"); err != nil {
		t.Fatal(err)
	}
	if n, _ := c.Progress(md.Digest); n != md.Size {
		t.Fatalf("Progress after Complete = %d, want %d", n, md.Size)
	}

	// An abandoned download's chunks go when it is retired.
	data2, md2 := artifact("2", 1000)
	if _, err := c.Put(md2, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	if err := c.PutChunk(md2.Digest, 0, data2[:1024]); err != nil {
		t.Fatal(err)
	}
	if err := c.Retire("demo", "2"); err != nil {
		t.Fatal(err)
	}
	if n, _ := c.Progress(md2.Digest); n != 0 {
		t.Errorf("retired download keeps %d bytes of chunks", n)
	}
}

func TestCompleteRejectsBadArtifact(t *testing.T) {
	tests := []struct {
		name      string
		tamper    func([]byte) []byte
		wantCheck string
	}{
		{"flipped byte", func(b []byte) []byte { b[10] ^= 1; return b }, "digest"},
		{"extra bytes", func(b []byte) []byte { return append(b, "xx"...) }, "size"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := open(t, filepath.Join(t.TempDir(), "cache.db"))
			store(t, c, "1", 4096)
			if err := c.Activate("demo", "1"); err != nil {
				t.Fatal(err)
			}
			data, md := artifact("2", 100)
			if _, err := c.Put(md, []byte("{}")); err != nil {
				t.Fatal(err)
			}
			if err := c.PutChunk(md.Digest, 0, tt.tamper(bytes.Clone(data))); err != nil {
				t.Fatal(err)
			}
			_, err := c.Complete("demo", "2")
			if trust.Check(err) != tt.wantCheck {
				t.Fatalf("Complete: %v, want check %q", err, tt.wantCheck)
			}
			r, _ := c.Get("demo", "2")
			if r.State != wire.StateRejected || r.Check != tt.wantCheck {
				t.Errorf("record %+v, want rejected/%s", r, tt.wantCheck)
			}
			if n, _ := c.Progress(md.Digest); n != 0 {
				t.Errorf("rejected chunks kept: progress %d", n)
			}
			if got := state(t, c, "1"); got != wire.StateActive {
				t.Errorf("v1 is %s after v2's rejection, want active", got)
			}
		})
	}
}

func TestRejectNeverDemotesServedVersion(t *testing.T) {
	c := open(t, filepath.Join(t.TempDir(), "cache.db"))
	store(t, c, "1", 4096)
	if err := c.Activate("demo", "1"); err != nil {
		t.Fatal(err)
	}
	if err := c.Reject("demo", "1", wire.StateRejected, "expiry", "expired"); err != nil {
		t.Fatal(err)
	}
	if err := c.Reject("demo", "9", wire.StateRejected, "unknown-key", "untrusted"); err != nil {
		t.Fatal(err)
	}
	r1, _ := c.Get("demo", "1")
	r9, _ := c.Get("demo", "9")
	if r1.State != wire.StateActive || r1.Check != "expiry" {
		t.Errorf("v1 %+v: want active with check expiry", r1)
	}
	if r9.State != wire.StateRejected || r9.Check != "unknown-key" {
		t.Errorf("v9 %+v: want rejected/unknown-key", r9)
	}
}

func TestEvictNeverTouchesActiveOrPrevious(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	c, err := Open(Options{Path: filepath.Join(t.TempDir(), "cache.db"), Now: func() time.Time {
		now = now.Add(time.Second)
		return now
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, v := range []string{"1", "2", "3", "4", "5"} {
		store(t, c, v, 4096)
	}
	// 1 and 2 are the oldest, and the ones we protect.
	for _, v := range []string{"1", "2"} {
		if err := c.Activate("demo", v); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Retire("demo", "4"); err != nil {
		t.Fatal(err)
	}
	dropped, err := c.Evict(0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range dropped {
		got = append(got, r.Version)
	}
	if fmt.Sprint(got) != "[3 5 4]" {
		t.Errorf("evicted %v, want [3 5 4] (least recently updated first)", got)
	}
	if state(t, c, "1") != wire.StatePrevious || state(t, c, "2") != wire.StateActive {
		t.Errorf("protected versions changed: v1 %s, v2 %s", state(t, c, "1"), state(t, c, "2"))
	}
	for _, v := range []string{"1", "2"} {
		r, _ := c.Get("demo", v)
		if _, err := c.Artifact(r.Digest); err != nil {
			t.Errorf("v%s artifact evicted: %v", v, err)
		}
	}
	if err := c.Check(); err != nil {
		t.Fatal(err)
	}
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cache.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket(bucketMeta)
		if err != nil {
			return err
		}
		return b.Put(keySchema, []byte("3"))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(Options{Path: path}); !errors.Is(err, ErrSchema) {
		t.Fatalf("Open of schema 3: %v, want ErrSchema", err)
	}
	// A new file is created at the current schema.
	c := open(t, filepath.Join(t.TempDir(), "new.db"))
	if v, err := c.Schema(); err != nil || v != SchemaVersion {
		t.Fatalf("Schema() = %d, %v", v, err)
	}
}

// TestUpgradeFromSchema1: a file written by a schema-1 agent (no tuf
// bucket) opens, keeps its records and gains the trusted metadata bucket.
func TestUpgradeFromSchema1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cache.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketModels, bucketChunks, bucketArtifacts} {
			if _, err := tx.CreateBucket(b); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bucketModels).Put(recordKey("demo", "1"), []byte(`{"name":"demo","version":"1","state":"retired"}`)); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(keySchema, []byte("1"))
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	c, err := Open(Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if v, _ := c.Schema(); v != 2 {
		t.Fatalf("schema %d after upgrade, want 2", v)
	}
	if r, err := c.Get("demo", "1"); err != nil || r.State != "retired" {
		t.Fatalf("record lost in upgrade: %+v %v", r, err)
	}
	for _, tc := range []struct {
		role string
		data []byte
	}{{"root", []byte(`{"r":1}`)}, {"timestamp", []byte(`{"t":1}`)}} {
		if b, err := c.LoadMetadata(tc.role); err != nil || b != nil {
			t.Fatalf("empty %s = %q %v", tc.role, b, err)
		}
		if err := c.StoreMetadata(tc.role, tc.data); err != nil {
			t.Fatal(err)
		}
		if b, _ := c.LoadMetadata(tc.role); string(b) != string(tc.data) {
			t.Fatalf("%s = %q", tc.role, b)
		}
	}
	if err := c.DeleteMetadata("root"); err != nil {
		t.Fatal(err)
	}
	if b, _ := c.LoadMetadata("root"); b != nil {
		t.Fatal("deleted metadata still there")
	}
	if err := c.StoreMetadata("root", nil); !errors.Is(err, ErrState) {
		t.Fatalf("empty store: %v", err)
	}
	if err := c.Check(); err != nil {
		t.Fatal(err)
	}
}
