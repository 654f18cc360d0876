package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/starling-edge/starling/shared/trust"
	"github.com/starling-edge/starling/shared/wire"
)

func openTest(tb testing.TB, path string, opts BoltOptions) *Bolt {
	tb.Helper()
	s, err := OpenBolt(path, opts)
	if err != nil {
		tb.Fatalf("OpenBolt: %v", err)
	}
	return s
}

// checkConsistent runs bbolt's own consistency check on a closed file.
func checkConsistent(tb testing.TB, path string) {
	tb.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		tb.Fatalf("reopen for check: %v", err)
	}
	defer db.Close()
	if err := db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return err
		}
		return nil
	}); err != nil {
		tb.Fatalf("bbolt consistency check: %v", err)
	}
}

func testModel(name, version string, data []byte) Model {
	return Model{
		Name: name, Version: version, Digest: trust.Digest(data), Size: int64(len(data)), Format: "tflite",
		Created: time.Unix(1700000000, 0).UTC(), Expires: time.Unix(1900000000, 0).UTC(),
		Metadata: []byte(`{"signed":{},"signatures":[]}`), Published: time.Unix(1700000100, 0).UTC(),
	}
}

func TestReopenFindsEverything(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "control.db")
	s := openTest(t, path, BoltOptions{})

	m1 := testModel("demo", "1", []byte("one"))
	m2 := testModel("demo", "2", []byte("two"))
	for _, m := range []Model{m2, m1} {
		if created, err := s.PutModel(ctx, m); err != nil || !created {
			t.Fatalf("PutModel %s: created=%v err=%v", m.Version, created, err)
		}
	}
	desired := &wire.DesiredState{Generation: 3, Models: []wire.DesiredModel{{Name: "demo", Version: "2", Metadata: m2.Metadata}}, Updated: time.Unix(1700000200, 0).UTC()}
	if _, err := s.UpdateDevice(ctx, "dev-1", true, func(d *Device) error {
		d.Status = StatusOnline
		d.Desired = desired
		d.PublishedGeneration = 3
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ev := wire.Event{Kind: wire.EventRejected, Model: "demo", Version: "2", Check: "digest", Message: "bad", Time: time.Unix(1700000300, 0).UTC()}
	if err := s.AppendEvent(ctx, "dev-1", ev); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	checkConsistent(t, path)

	s = openTest(t, path, BoltOptions{})
	defer s.Close()
	models, err := s.ListModels(ctx)
	if err != nil || len(models) != 2 || models[0].Version != "1" || models[1].Version != "2" {
		t.Fatalf("ListModels after reopen = %+v, %v; want demo 1 and 2 in order", models, err)
	}
	if got, err := s.GetModel(ctx, "demo", "2"); err != nil || got.Digest != m2.Digest || !bytes.Equal(got.Metadata, m2.Metadata) {
		t.Fatalf("GetModel = %+v, %v", got, err)
	}
	d, err := s.GetDevice(ctx, "dev-1")
	if err != nil || d.Status != StatusOnline || d.Desired == nil || d.Desired.Generation != 3 || d.PublishedGeneration != 3 {
		t.Fatalf("GetDevice after reopen = %+v, %v", d, err)
	}
	evs, err := s.ListEvents(ctx, "dev-1", 0)
	if err != nil || len(evs) != 1 || evs[0] != ev {
		t.Fatalf("ListEvents after reopen = %+v, %v; want [%+v]", evs, err, ev)
	}
}

func TestModelErrors(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, filepath.Join(t.TempDir(), "control.db"), BoltOptions{})
	defer s.Close()
	orig := testModel("demo", "1", []byte("one"))
	if _, err := s.PutModel(ctx, orig); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		m       Model
		created bool
		err     error
	}{
		{"same digest is idempotent", orig, false, nil},
		{"different digest conflicts", testModel("demo", "1", []byte("other")), false, ErrConflict},
		{"new version", testModel("demo", "1.1", []byte("other")), true, nil},
		{"missing name", testModel("", "1", []byte("x")), false, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			created, err := s.PutModel(ctx, tt.m)
			if created != tt.created || !errors.Is(err, tt.err) {
				t.Fatalf("PutModel = %v, %v; want %v, %v", created, err, tt.created, tt.err)
			}
		})
	}
	if got, _ := s.GetModel(ctx, "demo", "1"); got.Digest != orig.Digest {
		t.Fatalf("conflicting put changed the stored digest to %s", got.Digest)
	}
	if _, err := s.GetModel(ctx, "demo", "9"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetModel unknown: %v, want ErrNotFound", err)
	}
}

func TestUpdateDevice(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, filepath.Join(t.TempDir(), "control.db"), BoltOptions{})
	defer s.Close()
	if _, err := s.UpdateDevice(ctx, "dev-1", false, func(*Device) error { return nil }); !errors.Is(err, ErrNotFound) {
		t.Fatalf("update of unknown device without create: %v, want ErrNotFound", err)
	}
	if _, err := s.UpdateDevice(ctx, "../etc", true, func(*Device) error { return nil }); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad id: %v, want ErrInvalid", err)
	}
	if _, err := s.UpdateDevice(ctx, "dev-1", true, func(d *Device) error { d.Status = StatusOnline; return nil }); err != nil {
		t.Fatal(err)
	}
	d, err := s.UpdateDevice(ctx, "dev-1", false, func(d *Device) error { d.Status = StatusOffline; return ErrNoChange })
	if err != nil || d.Status != StatusOnline {
		t.Fatalf("ErrNoChange: %+v, %v; want stored status online", d, err)
	}
	boom := errors.New("boom")
	if _, err := s.UpdateDevice(ctx, "dev-1", false, func(d *Device) error { d.Status = StatusOffline; return boom }); !errors.Is(err, boom) {
		t.Fatalf("aborting callback: %v", err)
	}
	if d, _ := s.GetDevice(ctx, "dev-1"); d.Status != StatusOnline {
		t.Fatalf("aborted update was stored: %+v", d)
	}
}

func TestEventsBounded(t *testing.T) {
	ctx := context.Background()
	s := openTest(t, filepath.Join(t.TempDir(), "control.db"), BoltOptions{EventHistory: 5})
	defer s.Close()
	for i := range 12 {
		if err := s.AppendEvent(ctx, "dev-1", wire.Event{Kind: wire.EventFailed, Message: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	evs, err := s.ListEvents(ctx, "dev-1", 0)
	if err != nil || len(evs) != 5 || evs[0].Message != "7" || evs[4].Message != "11" {
		t.Fatalf("ListEvents = %+v, %v; want messages 7..11", evs, err)
	}
	evs, _ = s.ListEvents(ctx, "dev-1", 2)
	if len(evs) != 2 || evs[0].Message != "10" || evs[1].Message != "11" {
		t.Fatalf("ListEvents limit 2 = %+v; want 10, 11", evs)
	}
	if evs, err := s.ListEvents(ctx, "nobody", 0); err != nil || len(evs) != 0 {
		t.Fatalf("events of unknown device: %+v, %v", evs, err)
	}
}

// TestConcurrentUpdates runs writers and readers at once; run with -race.
func TestConcurrentUpdates(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "control.db")
	s := openTest(t, path, BoltOptions{})
	var wg sync.WaitGroup
	const workers, each = 4, 25
	for w := range workers {
		wg.Go(func() {
			for range each {
				if _, err := s.UpdateDevice(ctx, "dev-1", true, func(d *Device) error {
					if d.Desired == nil {
						d.Desired = &wire.DesiredState{}
					}
					d.Desired.Generation++
					return nil
				}); err != nil {
					t.Error(err)
				}
				if err := s.AppendEvent(ctx, fmt.Sprintf("dev-%d", w), wire.Event{Kind: wire.EventFailed}); err != nil {
					t.Error(err)
				}
				if _, err := s.ListDevices(ctx); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	d, err := s.GetDevice(ctx, "dev-1")
	if err != nil || d.Desired.Generation != workers*each {
		t.Fatalf("generation = %+v, %v; want %d (lost update)", d.Desired, err, workers*each)
	}
	s.Close()
	checkConsistent(t, path)
	if _, err := s.GetDevice(ctx, "dev-1"); !errors.Is(err, ErrClosed) {
		t.Fatalf("use after close: %v, want ErrClosed", err)
	}
}

func TestSchemaFromNewerBuildRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "control.db")
	s := openTest(t, path, BoltOptions{})
	if err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keySchema, []byte{0, 0, 0, 0, 0, 0, 0, 99})
	}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := OpenBolt(path, BoltOptions{}); !errors.Is(err, ErrSchema) {
		t.Fatalf("OpenBolt newer schema: %v, want ErrSchema", err)
	}
}

func TestArtifacts(t *testing.T) {
	dir := t.TempDir()
	a, err := OpenArtifacts(dir)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("starling"), 1000)

	p, err := a.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(p, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if p.Digest() != trust.Digest(data) || p.Size() != int64(len(data)) {
		t.Fatalf("pending digest/size = %s/%d", p.Digest(), p.Size())
	}
	digest, err := p.Commit()
	if err != nil || digest != trust.Digest(data) {
		t.Fatalf("Commit = %s, %v", digest, err)
	}
	p.Abort() // after Commit: no effect

	f, size, err := a.Open(digest)
	if err != nil || size != int64(len(data)) {
		t.Fatalf("Open = %d, %v", size, err)
	}
	got, _ := io.ReadAll(f)
	f.Close()
	if !bytes.Equal(got, data) {
		t.Fatal("artifact bytes differ")
	}

	aborted, _ := a.Begin()
	aborted.Write([]byte("partial"))
	aborted.Abort()
	if _, _, err := a.Open(trust.Digest([]byte("partial"))); !errors.Is(err, ErrNotFound) {
		t.Fatalf("aborted artifact: %v, want ErrNotFound", err)
	}
	if _, _, err := a.Open("sha256:XYZ"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad digest: %v, want ErrInvalid", err)
	}

	// A crash mid-upload leaves a temp file; reopening removes it.
	crashed, _ := a.Begin()
	crashed.Write([]byte("half"))
	if _, err := OpenArtifacts(dir); err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(left) != 0 {
		t.Fatalf("temp files left after reopen: %v", left)
	}
	crashed.Abort()
}
