package link_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/starling-edge/starling/controlplane/broker"
	"github.com/starling-edge/starling/controlplane/internal/cptest"
	"github.com/starling-edge/starling/controlplane/link"
	"github.com/starling-edge/starling/controlplane/store"
	"github.com/starling-edge/starling/shared/wire"
)

// TestDesiredSurvivesBrokerOutage: a desired state set while the broker is
// down is stored, reported as not delivered, and published once the link is
// back, without anyone asking again.
func TestDesiredSurvivesBrokerOutage(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := store.OpenBolt(filepath.Join(dir, "control.db"), store.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	arts, err := store.OpenArtifacts(filepath.Join(dir, "artifacts"))
	if err != nil {
		t.Fatal(err)
	}
	m := cptest.NewModel(t, "demo", "1", 10, nil)
	if _, err := st.PutModel(ctx, store.Model{Name: "demo", Version: "1", Digest: m.Meta.Digest, Size: 10, Format: "tflite", Metadata: json.RawMessage(`{"length":10}`)}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.UpdateDevice(ctx, "dev-1", true, func(*store.Device) error { return nil }); err != nil {
		t.Fatal(err)
	}

	b, err := broker.Start(broker.Options{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	addr := b.Addr()
	l, err := link.New(link.Options{BrokerURL: b.URL(), Store: st, Artifacts: arts, PublishTimeout: time.Second, RetryInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Start(ctx); err != nil {
		t.Fatal(err)
	}
	b.Close()

	refs := []store.ModelRef{{Name: "demo", Version: "1"}}
	ds, err := l.SetDesired(ctx, "dev-1", refs)
	if !errors.Is(err, link.ErrPublish) || ds.Generation != 1 {
		t.Fatalf("SetDesired with the broker down = %+v, %v; want generation 1 and ErrPublish", ds, err)
	}
	if d, _ := st.GetDevice(ctx, "dev-1"); d.Desired == nil || d.Desired.Generation != 1 || d.PublishedGeneration != 0 {
		t.Fatalf("stored device = %+v; want generation 1 stored, 0 published", d)
	}

	b, err = broker.Start(broker.Options{Addr: addr})
	if err != nil {
		t.Fatalf("restart broker on %s: %v", addr, err)
	}
	defer b.Close()
	cptest.Eventually(t, "pending desired state published after reconnect", func() bool {
		d, _ := st.GetDevice(ctx, "dev-1")
		return d.PublishedGeneration == 1
	})
	dev := cptest.Connect(t, b.URL(), "dev-1")
	var got wire.DesiredState
	if err := json.Unmarshal(cptest.Receive(t, dev.Subscribe(wire.Desired), "retained desired state").Payload(), &got); err != nil {
		t.Fatal(err)
	}
	if got.Generation != 1 || len(got.Models) != 1 {
		t.Fatalf("retained desired = %+v", got)
	}

	// Unknown device and model versions are ErrNotFound.
	if _, err := l.SetDesired(ctx, "dev-9", refs); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown device: %v", err)
	}
	if _, err := l.SetDesired(ctx, "dev-1", []store.ModelRef{{Name: "demo", Version: "2"}}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown version: %v", err)
	}
}

func TestOptions(t *testing.T) {
	dir := t.TempDir()
	st, err := store.OpenBolt(filepath.Join(dir, "control.db"), store.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	arts, _ := store.OpenArtifacts(filepath.Join(dir, "artifacts"))
	for _, tt := range []struct {
		name string
		opts link.Options
	}{
		{"no store", link.Options{BrokerURL: "mqtt://127.0.0.1:1883", Artifacts: arts}},
		{"no artifacts", link.Options{BrokerURL: "mqtt://127.0.0.1:1883", Store: st}},
		{"bad url", link.Options{BrokerURL: "127.0.0.1:1883", Store: st, Artifacts: arts}},
		{"url with path", link.Options{BrokerURL: "mqtt://127.0.0.1:1883/x", Store: st, Artifacts: arts}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := link.New(tt.opts); !errors.Is(err, link.ErrOptions) {
				t.Fatalf("New = %v; want ErrOptions", err)
			}
		})
	}
}
