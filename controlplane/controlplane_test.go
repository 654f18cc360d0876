package controlplane_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/starling-edge/starling/controlplane"
	"github.com/starling-edge/starling/controlplane/fleet"
	"github.com/starling-edge/starling/controlplane/internal/cptest"
	"github.com/starling-edge/starling/shared/testbroker"
	"github.com/starling-edge/starling/shared/trust"
	"github.com/starling-edge/starling/shared/wire"
)

func startServer(t *testing.T, opts controlplane.Options) *controlplane.Server {
	t.Helper()
	if opts.HTTPAddr == "" {
		opts.HTTPAddr = "127.0.0.1:0"
	}
	if opts.MQTTAddr == "" {
		opts.MQTTAddr = "127.0.0.1:0"
	}
	if opts.BrokerURL == "" {
		opts.InsecureMQTTAddr = "127.0.0.1:0"
	}
	s, err := controlplane.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	tok, err := fleet.ReadTokenFile(filepath.Join(opts.DataDir, controlplane.AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	cptest.UseToken("http://"+s.HTTPAddr(), tok)
	return s
}

// deviceBroker is where the fake devices of these tests connect: the
// embedded broker's development listener, or the external broker.
func deviceBroker(s *controlplane.Server) string {
	if u := s.InsecureBrokerURL(); u != "" {
		return u
	}
	return s.BrokerURL()
}

type deviceView struct {
	ID       string              `json:"id"`
	Status   string              `json:"status"`
	LastSeen *time.Time          `json:"last_seen"`
	Reported *wire.ReportedState `json:"reported"`
	Desired  *wire.DesiredState  `json:"desired"`
}

func getDevice(t *testing.T, base, id string) (deviceView, bool) {
	t.Helper()
	code, body := cptest.Do(t, "GET", base+"/api/v1/devices/"+id, "", nil)
	if code == 404 {
		return deviceView{}, false
	}
	var d deviceView
	if code != 200 || json.Unmarshal(body, &d) != nil {
		t.Fatalf("GET device %s = %d %s", id, code, body)
	}
	return d, true
}

// fetch asks for one chunk and returns the decoded answer.
func fetch(t *testing.T, dev *cptest.Device, resp <-chan pahoMessage, req wire.FetchRequest) (wire.ChunkHeader, []byte) {
	t.Helper()
	b, _ := json.Marshal(req)
	dev.Publish(wire.FetchReq, false, b)
	m := cptest.Receive(t, resp, "fetch response "+req.ID)
	h, data, err := wire.DecodeChunk(m.Payload())
	if err != nil {
		t.Fatalf("fetch %s: %v", req.ID, err)
	}
	if h.ID != req.ID {
		t.Fatalf("answer for %q while waiting for %q", h.ID, req.ID)
	}
	return h, data
}

// TestFleetOverMQTT plays a device against the control plane, once with
// the embedded broker and once with a real Mosquitto.
func TestFleetOverMQTT(t *testing.T) {
	for _, tt := range []struct {
		name   string
		broker func(t *testing.T) string
	}{
		{"embedded", func(*testing.T) string { return "" }},
		{"mosquitto", func(t *testing.T) string { return testbroker.Mosquitto(t) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var dropped atomic.Int32
			srv := startServer(t, controlplane.Options{
				DataDir:   t.TempDir(),
				BrokerURL: tt.broker(t),
				FetchHook: func(_ string, req wire.FetchRequest) bool {
					// Drop the first request marked "drop-once": the agent must ask again.
					return !(req.ID == "drop-once" && dropped.Add(1) == 1)
				},
			})
			testFleet(t, srv, &dropped)
		})
	}
}

func testFleet(t *testing.T, srv *controlplane.Server, dropped *atomic.Int32) {
	base := "http://" + srv.HTTPAddr()
	if !strings.HasPrefix(srv.BrokerURL(), "mqtt://127.0.0.1:") && !strings.HasPrefix(srv.BrokerURL(), "mqtts://127.0.0.1:") {
		t.Fatalf("BrokerURL = %q", srv.BrokerURL())
	}
	// 1.5 MiB: more than one wire.MaxChunk.
	m := cptest.NewModel(t, "demo", "1", wire.MaxChunk+wire.MaxChunk/2, nil)
	if code, body := cptest.Upload(t, base, m); code != 201 {
		t.Fatalf("publish = %d %s", code, body)
	}

	dev := cptest.Connect(t, deviceBroker(srv), "dev-1")
	// Garbage first: it must be dropped without harm.
	dev.Publish(wire.Status, false, []byte("sleeping"))
	dev.Publish(wire.Reported, false, []byte("{not json"))
	dev.Publish(wire.FetchReq, false, []byte("\x00\x01"))
	dev.Publish(wire.Events, false, []byte(`{"kind":"model.rejected"}`)) // not registered yet: dropped

	dev.Publish(wire.Status, true, []byte(wire.Online))
	rs := wire.ReportedState{DeviceID: "dev-1", AgentVersion: "0.1.0", OS: "linux", Arch: "arm64", Engines: []string{"gotflite"}, Time: time.Now().UTC()}
	rb, _ := json.Marshal(rs)
	dev.Publish(wire.Reported, true, rb)
	cptest.Eventually(t, "device registered with its reported state", func() bool {
		d, ok := getDevice(t, base, "dev-1")
		return ok && d.Status == "online" && d.Reported != nil && d.Reported.AgentVersion == "0.1.0" && d.LastSeen != nil
	})
	// A report naming another device on dev-1's topic is refused.
	spoof, _ := json.Marshal(wire.ReportedState{DeviceID: "dev-2", AgentVersion: "6.6.6"})
	dev.Publish(wire.Reported, false, spoof)

	code, body := cptest.Do(t, "PUT", base+"/api/v1/devices/dev-1/desired", "application/json",
		strings.NewReader(`{"models":[{"name":"demo","version":"1"}]}`))
	if code != 200 {
		t.Fatalf("PUT desired = %d %s", code, body)
	}

	// Subscribing after the PUT still delivers it: it is retained.
	desired := dev.Subscribe(wire.Desired)
	var ds wire.DesiredState
	if err := json.Unmarshal(cptest.Receive(t, desired, "desired state").Payload(), &ds); err != nil {
		t.Fatal(err)
	}
	if ds.Generation != 1 || len(ds.Models) != 1 || ds.Models[0].Name != "demo" {
		t.Fatalf("desired = %+v", ds)
	}
	md := &m.Meta

	// Fetch the artifact in chunks, asking for more than MaxChunk each time.
	resp := subscribe(dev)
	var got []byte
	for off := int64(0); ; {
		h, data := fetch(t, dev, resp, wire.FetchRequest{ID: fmt.Sprint("c", off), Digest: md.Digest, Offset: off, Length: 4 * wire.MaxChunk})
		if h.Error != "" || h.Total != md.Size || h.Offset != off || len(data) > wire.MaxChunk {
			t.Fatalf("chunk at %d: %+v with %d bytes", off, h, len(data))
		}
		got = append(got, data...)
		off += int64(len(data))
		if off >= h.Total {
			break
		}
	}
	if err := trust.VerifyArtifact(md, got); err != nil {
		t.Fatalf("reassembled artifact: %v", err)
	}

	// Errors come back in the header, with no data.
	for _, tc := range []struct {
		req  wire.FetchRequest
		want string
	}{
		{wire.FetchRequest{ID: "unknown", Digest: trust.Digest([]byte("nothing")), Length: 10}, "unknown artifact"},
		{wire.FetchRequest{ID: "malformed", Digest: "sha256:zz", Length: 10}, "malformed digest"},
		{wire.FetchRequest{ID: "past-end", Digest: md.Digest, Offset: md.Size + 1, Length: 10}, "bad range"},
		{wire.FetchRequest{ID: "negative", Digest: md.Digest, Offset: -1, Length: 10}, "bad range"},
	} {
		h, data := fetch(t, dev, resp, tc.req)
		if !strings.Contains(h.Error, tc.want) || len(data) != 0 {
			t.Fatalf("%s: header %+v with %d bytes; want error %q", tc.req.ID, h, len(data), tc.want)
		}
	}

	// A dropped request gets no answer; asking again does.
	b, _ := json.Marshal(wire.FetchRequest{ID: "drop-once", Digest: md.Digest, Length: 10})
	dev.Publish(wire.FetchReq, false, b)
	h, data := fetch(t, dev, resp, wire.FetchRequest{ID: "drop-once", Digest: md.Digest, Length: 10})
	if h.Error != "" || !bytes.Equal(data, m.Artifact[:10]) || dropped.Load() != 2 {
		t.Fatalf("retry after drop: %+v, hook calls %d", h, dropped.Load())
	}

	// Events are kept once the device is registered.
	ev, _ := json.Marshal(wire.Event{Kind: wire.EventRejected, Model: "demo", Version: "1", Check: "signature", Message: "bad sig", Time: time.Now().UTC()})
	dev.Publish(wire.Events, false, ev)
	cptest.Eventually(t, "event stored", func() bool {
		code, body := cptest.Do(t, "GET", base+"/api/v1/devices/dev-1/events", "", nil)
		var evs []wire.Event
		return code == 200 && json.Unmarshal(body, &evs) == nil && len(evs) == 1 && evs[0].Check == "signature"
	})
	if d, _ := getDevice(t, base, "dev-1"); d.Reported.AgentVersion != "0.1.0" {
		t.Fatalf("spoofed report was stored: %+v", d.Reported)
	}

	dev.Publish(wire.Status, true, []byte(wire.Offline))
	cptest.Eventually(t, "device offline", func() bool {
		d, _ := getDevice(t, base, "dev-1")
		return d.Status == "offline"
	})
	if _, ok := getDevice(t, base, "dev-2"); ok {
		t.Fatal("a spoofed report registered dev-2")
	}
}

// TestEmbeddedBrokerRestart: a restarted control plane with an embedded
// broker (which forgets retained messages) gives devices their desired
// state back, from the store.
func TestEmbeddedBrokerRestart(t *testing.T) {
	dir := t.TempDir()
	srv := startServer(t, controlplane.Options{DataDir: dir})
	base := "http://" + srv.HTTPAddr()
	m := cptest.NewModel(t, "demo", "1", 100, nil)
	if code, body := cptest.Upload(t, base, m); code != 201 {
		t.Fatalf("publish = %d %s", code, body)
	}
	dev := cptest.Connect(t, deviceBroker(srv), "dev-1")
	dev.Publish(wire.Status, true, []byte(wire.Online))
	cptest.Eventually(t, "device registered", func() bool { _, ok := getDevice(t, base, "dev-1"); return ok })
	if code, body := cptest.Do(t, "PUT", base+"/api/v1/devices/dev-1/desired", "application/json",
		strings.NewReader(`{"models":[{"name":"demo","version":"1"}]}`)); code != 200 {
		t.Fatalf("PUT desired = %d %s", code, body)
	}
	dev.Client.Disconnect(50)
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}

	srv = startServer(t, controlplane.Options{DataDir: dir})
	dev = cptest.Connect(t, deviceBroker(srv), "dev-1")
	var ds wire.DesiredState
	if err := json.Unmarshal(cptest.Receive(t, dev.Subscribe(wire.Desired), "desired state after restart").Payload(), &ds); err != nil {
		t.Fatal(err)
	}
	if ds.Generation != 1 || len(ds.Models) != 1 {
		t.Fatalf("desired after restart = %+v", ds)
	}
	if d, ok := getDevice(t, "http://"+srv.HTTPAddr(), "dev-1"); !ok || d.Desired == nil || d.Desired.Generation != 1 {
		t.Fatalf("device after restart = %+v", d)
	}
}

func TestOptionsErrors(t *testing.T) {
	for _, tt := range []struct {
		name  string
		opts  controlplane.Options
		field string
	}{
		{"no data dir", controlplane.Options{}, "DataDir"},
		{"bad listen", controlplane.Options{DataDir: "x", HTTPAddr: "8080"}, "HTTPAddr"},
		{"bad mqtt listen", controlplane.Options{DataDir: "x", MQTTAddr: "localhost"}, "MQTTAddr"},
		{"bad broker", controlplane.Options{DataDir: "x", BrokerURL: "http://127.0.0.1:1883"}, "BrokerURL"},
		{"broker without port", controlplane.Options{DataDir: "x", BrokerURL: "mqtt://127.0.0.1"}, "BrokerURL"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := controlplane.New(tt.opts)
			if !errors.Is(err, controlplane.ErrOptions) || !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("New = %v; want ErrOptions naming %s", err, tt.field)
			}
		})
	}
	// An unreachable external broker fails Start with a clear error.
	s, err := controlplane.New(controlplane.Options{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0",
		BrokerURL: fmt.Sprintf("mqtt://127.0.0.1:%d", testbroker.FreePort(t))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "cannot connect") {
		t.Fatalf("Start with no broker = %v", err)
	}
}
