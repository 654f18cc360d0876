package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/starling-edge/starling/controlplane/api"
	"github.com/starling-edge/starling/controlplane/broker"
	"github.com/starling-edge/starling/controlplane/internal/cptest"
	"github.com/starling-edge/starling/controlplane/link"
	"github.com/starling-edge/starling/controlplane/store"
	"github.com/starling-edge/starling/controlplane/tufrepo"
	"github.com/starling-edge/starling/shared/trust"
	"github.com/starling-edge/starling/shared/wire"
)

type env struct {
	base  string
	store *store.Bolt
	arts  *store.Artifacts
}

// newEnv runs the API on a real bbolt store and artifact directory, with a
// real MQTT link to a real embedded broker behind PUT .../desired.
func newEnv(t *testing.T, maxUpload int64) *env {
	t.Helper()
	dir := t.TempDir()
	st, err := store.OpenBolt(filepath.Join(dir, "control.db"), store.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	arts, err := store.OpenArtifacts(filepath.Join(dir, "artifacts"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := broker.Start(broker.Options{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	l, err := link.New(link.Options{BrokerURL: b.URL(), Store: st, Artifacts: arts})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	repo, err := tufrepo.Open(tufrepo.Options{Dir: filepath.Join(dir, "tuf")})
	if err != nil {
		t.Fatal(err)
	}
	a, err := api.New(api.Options{Store: st, Artifacts: arts, Desired: l, MaxUpload: maxUpload, Repo: repo})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a)
	t.Cleanup(func() {
		srv.Close()
		l.Close()
		b.Close()
		st.Close()
	})
	return &env{base: srv.URL, store: st, arts: arts}
}

func (e *env) registerDevice(t *testing.T, id string) {
	t.Helper()
	if _, err := e.store.UpdateDevice(context.Background(), id, true, func(d *store.Device) error {
		d.Status = wire.Online
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// errorOf decodes an {"error": "..."} body, failing if it is not one.
func errorOf(t *testing.T, body []byte) string {
	t.Helper()
	var e struct {
		Error string `json:"error"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil || e.Error == "" {
		t.Fatalf("body is not {\"error\":...}: %s", body)
	}
	return e.Error
}

type modelView struct {
	Name     string          `json:"name"`
	Version  string          `json:"version"`
	Digest   string          `json:"digest"`
	Size     int64           `json:"size"`
	Format   string          `json:"format"`
	Created  time.Time       `json:"created"`
	Expires  time.Time       `json:"expires"`
	Metadata json.RawMessage `json:"metadata"`
}

func TestHealth(t *testing.T) {
	e := newEnv(t, 0)
	code, body := cptest.Do(t, "GET", e.base+"/api/v1/health", "", nil)
	if code != 200 || strings.TrimSpace(string(body)) != `{"status":"ok"}` {
		t.Fatalf("health = %d %s", code, body)
	}
}

func TestPublishModel(t *testing.T) {
	e := newEnv(t, 0)
	m := cptest.NewModel(t, "demo", "1", 5000, nil)

	code, body := cptest.Upload(t, e.base, m)
	if code != http.StatusCreated {
		t.Fatalf("publish = %d %s", code, body)
	}
	var got modelView
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	if got.Name != "demo" || got.Version != "1" || got.Digest != m.Meta.Digest || got.Size != 5000 || got.Format != "tflite" ||
		!got.Expires.Equal(m.Meta.Expires) || got.Metadata != nil {
		t.Fatalf("publish answer = %+v", got)
	}

	// The same again is idempotent.
	if code, body := cptest.Upload(t, e.base, m); code != http.StatusOK {
		t.Fatalf("republish identical = %d %s, want 200", code, body)
	}

	// The same version with other bytes conflicts, and nothing changes.
	other := cptest.NewModel(t, "demo", "1", 5000, nil)
	code, body = cptest.Upload(t, e.base, other)
	if code != http.StatusConflict || !strings.Contains(errorOf(t, body), "already published") {
		t.Fatalf("conflicting version = %d %s, want 409", code, body)
	}
	if _, _, err := e.arts.Open(other.Meta.Digest); err == nil {
		t.Fatal("the refused artifact was stored")
	}

	// List and detail.
	code, body = cptest.Do(t, "GET", e.base+"/api/v1/models", "", nil)
	var list []modelView
	if code != 200 || json.Unmarshal(body, &list) != nil || len(list) != 1 || list[0].Digest != m.Meta.Digest {
		t.Fatalf("list = %d %s", code, body)
	}
	code, body = cptest.Do(t, "GET", e.base+"/api/v1/models/demo/versions/1", "", nil)
	if code != 200 || json.Unmarshal(body, &got) != nil {
		t.Fatalf("detail = %d %s", code, body)
	}
	// The detail shows the target entry as the operator signed it.
	if !strings.Contains(string(got.Metadata), strings.TrimPrefix(m.Meta.Digest, "sha256:")) {
		t.Fatalf("detail metadata %s does not name the digest", got.Metadata)
	}
	code, body = cptest.Do(t, "GET", e.base+"/api/v1/models/demo/versions/2", "", nil)
	if code != 404 || !strings.Contains(errorOf(t, body), "not published") {
		t.Fatalf("unknown version = %d %s", code, body)
	}
}

func TestPublishRejects(t *testing.T) {
	e := newEnv(t, 64<<10)
	repo := cptest.RepoFor(t, e.base)
	good := cptest.NewModel(t, "demo", "1", 1000, nil)
	tampered := append([]byte(nil), good.Artifact...)
	tampered[10] ^= 0xff
	expired := cptest.NewModel(t, "demo", "1", 1000, func(md *trust.ModelMetadata) { md.Expires = time.Now().Add(-time.Hour) })
	noFormat := cptest.NewModel(t, "demo", "1", 1000, func(md *trust.ModelMetadata) { md.Format = "" })
	badName := cptest.NewModel(t, "../demo", "1", 1000, nil)
	big := cptest.NewModel(t, "demo", "big", 100<<10, nil)
	other, err := trust.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	targets := repo.Next(t, nil, good)
	path := []byte(good.Path())

	P := func(name string, data []byte) cptest.Part { return cptest.Part{Name: name, Data: data} }
	tests := []struct {
		name  string
		parts []cptest.Part
		code  int
		want  string // in the error
	}{
		{"tampered artifact", []cptest.Part{P("targets", targets), P("target", path), P("artifact", tampered)}, 400, "digest check failed"},
		{"truncated artifact", []cptest.Part{P("targets", targets), P("target", path), P("artifact", good.Artifact[:999])}, 400, "size check failed"},
		{"expired targets", []cptest.Part{P("targets", repo.Next(t, nil, expired)), P("target", path), P("artifact", expired.Artifact)}, 400, "expiry check failed"},
		{"no format", []cptest.Part{P("targets", repo.Next(t, nil, noFormat)), P("target", path), P("artifact", noFormat.Artifact)}, 400, "no format"},
		{"path-like name", []cptest.Part{P("targets", repo.Next(t, nil, badName)), P("target", []byte(badName.Path())), P("artifact", badName.Artifact)}, 400, "malformed check failed"},
		{"targets not JSON", []cptest.Part{P("targets", []byte("{nope")), P("target", path), P("artifact", good.Artifact)}, 400, "malformed check failed"},
		{"unsigned targets", []cptest.Part{P("targets", repo.Next(t, []*trust.PrivateKey{}, good)), P("target", path), P("artifact", good.Artifact)}, 400, "threshold check failed"},
		{"signed by an unknown key", []cptest.Part{P("targets", repo.Next(t, []*trust.PrivateKey{other}, good)), P("target", path), P("artifact", good.Artifact)}, 400, "unknown-key check failed"},
		{"target not in targets", []cptest.Part{P("targets", targets), P("target", []byte("models/demo/9")), P("artifact", good.Artifact)}, 400, "unknown-target check failed"},
		{"missing artifact", []cptest.Part{P("targets", targets), P("target", path)}, 400, `no "artifact" part`},
		{"missing targets", []cptest.Part{P("target", path), P("artifact", good.Artifact)}, 400, `no "targets" part`},
		{"missing target", []cptest.Part{P("targets", targets), P("artifact", good.Artifact)}, 400, `no "target" part`},
		{"unknown part", []cptest.Part{P("targets", targets), P("readme", nil), P("artifact", good.Artifact)}, 400, `unexpected upload part "readme"`},
		{"artifact first is fine but tampered", []cptest.Part{P("artifact", tampered), P("target", path), P("targets", targets)}, 400, "digest check failed"},
		{"over the upload limit", []cptest.Part{P("targets", repo.Next(t, nil, big)), P("target", []byte(big.Path())), P("artifact", big.Artifact)}, 413, "limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, ct := cptest.Multipart(t, tt.parts...)
			code, resp := cptest.Do(t, "POST", e.base+"/api/v1/models", ct, body)
			if code != tt.code || !strings.Contains(errorOf(t, resp), tt.want) {
				t.Fatalf("= %d %s; want %d containing %q", code, resp, tt.code, tt.want)
			}
		})
	}
	code, body := cptest.Do(t, "POST", e.base+"/api/v1/models", "application/json", strings.NewReader("{}"))
	if code != 400 || !strings.Contains(errorOf(t, body), "multipart/form-data") {
		t.Fatalf("not multipart = %d %s", code, body)
	}
	// Nothing was registered or stored by any of them.
	if models, _ := e.store.ListModels(context.Background()); len(models) != 0 {
		t.Fatalf("rejected uploads registered models: %+v", models)
	}
	// The artifact order does not matter for a good upload.
	body2, ct := cptest.Multipart(t, P("artifact", good.Artifact), P("target", path), P("targets", targets))
	if code, resp := cptest.Do(t, "POST", e.base+"/api/v1/models", ct, body2); code != 201 {
		t.Fatalf("artifact-first upload = %d %s", code, resp)
	}
	repo.Commit(good)
	// The same targets version again is a conflict: someone published first.
	body3, ct := cptest.Multipart(t, P("targets", targets), P("target", path), P("artifact", good.Artifact))
	if code, resp := cptest.Do(t, "POST", e.base+"/api/v1/models", ct, body3); code != 409 || !strings.Contains(errorOf(t, resp), "next version") {
		t.Fatalf("stale targets version = %d %s, want 409", code, resp)
	}
	// Metadata is served by name.
	for _, name := range []string{"1.root.json", "root.json", "timestamp.json", "2.targets.json", "2.snapshot.json"} {
		if code, body := cptest.Do(t, "GET", e.base+"/api/v1/tuf/"+name, "", nil); code != 200 || !json.Valid(body) {
			t.Errorf("GET %s = %d %.100s", name, code, body)
		}
	}
	if code, body := cptest.Do(t, "GET", e.base+"/api/v1/tuf/9.root.json", "", nil); code != 404 {
		t.Errorf("GET 9.root.json = %d %s", code, body)
	}
	// Targets without an artifact may not add a target.
	if code, body := cptest.Do(t, "POST", e.base+"/api/v1/trust/targets", "application/json", bytes.NewReader(repo.Next(t, nil, big))); code != 400 || !strings.Contains(errorOf(t, body), "push its artifact") {
		t.Errorf("POST targets with a new target = %d %s", code, body)
	}
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func TestDevicesAndDesired(t *testing.T) {
	e := newEnv(t, 0)
	m := cptest.NewModel(t, "demo", "1", 100, nil)
	if code, body := cptest.Upload(t, e.base, m); code != 201 {
		t.Fatalf("publish = %d %s", code, body)
	}
	put := func(id, body string) (int, []byte) {
		return cptest.Do(t, "PUT", e.base+"/api/v1/devices/"+id+"/desired", "application/json", strings.NewReader(body))
	}

	// Unknown device.
	for _, path := range []string{"/api/v1/devices/dev-1", "/api/v1/devices/dev-1/events"} {
		if code, body := cptest.Do(t, "GET", e.base+path, "", nil); code != 404 || !strings.Contains(errorOf(t, body), "not registered") {
			t.Fatalf("GET %s unknown = %d %s", path, code, body)
		}
	}
	if code, body := put("dev-1", `{"models":[{"name":"demo","version":"1"}]}`); code != 404 || !strings.Contains(errorOf(t, body), "dev-1 is not registered") {
		t.Fatalf("PUT unknown device = %d %s", code, body)
	}

	e.registerDevice(t, "dev-1")
	tests := []struct {
		name, body string
		code       int
		want       string
	}{
		{"not JSON", `models: demo`, 400, "malformed JSON"},
		{"unknown field", `{"models":[],"extra":1}`, 400, "unknown field"},
		{"trailing data", `{"models":[]} {}`, 400, "after the object"},
		{"no models key", `{}`, 400, `needs "models"`},
		{"model without version", `{"models":[{"name":"demo"}]}`, 400, "needs both name and version"},
		{"duplicate", `{"models":[{"name":"demo","version":"1"},{"name":"demo","version":"1"}]}`, 400, "listed twice"},
		{"unknown version", `{"models":[{"name":"demo","version":"9"}]}`, 404, "demo version 9 is not published"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := put("dev-1", tt.body)
			if code != tt.code || !strings.Contains(errorOf(t, body), tt.want) {
				t.Fatalf("= %d %s; want %d containing %q", code, body, tt.code, tt.want)
			}
		})
	}
	if code, body := put("bad%20id", `{"models":[]}`); code != 400 || !strings.Contains(errorOf(t, body), "invalid device id") {
		t.Fatalf("bad id = %d %s", code, body)
	}

	for gen := int64(1); gen <= 2; gen++ {
		code, body := put("dev-1", `{"models":[{"name":"demo","version":"1"}]}`)
		var ds wire.DesiredState
		if code != 200 || json.Unmarshal(body, &ds) != nil || ds.Generation != gen || len(ds.Models) != 1 {
			t.Fatalf("PUT desired #%d = %d %s", gen, code, body)
		}
		if !strings.Contains(string(ds.Models[0].Metadata), strings.TrimPrefix(m.Meta.Digest, "sha256:")) {
			t.Fatalf("desired metadata %s does not name the target's digest", ds.Models[0].Metadata)
		}
	}

	code, body := cptest.Do(t, "GET", e.base+"/api/v1/devices", "", nil)
	var devs []struct {
		ID       string              `json:"id"`
		Status   string              `json:"status"`
		LastSeen *time.Time          `json:"last_seen"`
		Reported *wire.ReportedState `json:"reported"`
		Desired  *wire.DesiredState  `json:"desired"`
	}
	if code != 200 || json.Unmarshal(body, &devs) != nil || len(devs) != 1 || devs[0].ID != "dev-1" ||
		devs[0].Status != "online" || devs[0].Desired == nil || devs[0].Desired.Generation != 2 {
		t.Fatalf("devices = %d %s", code, body)
	}

	for i := range 3 {
		if err := e.store.AppendEvent(context.Background(), "dev-1", wire.Event{Kind: wire.EventRejected, Message: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	code, body = cptest.Do(t, "GET", e.base+"/api/v1/devices/dev-1/events?limit=2", "", nil)
	var evs []wire.Event
	if code != 200 || json.Unmarshal(body, &evs) != nil || len(evs) != 2 || evs[1].Message != "2" {
		t.Fatalf("events = %d %s", code, body)
	}
	if code, body := cptest.Do(t, "GET", e.base+"/api/v1/devices/dev-1/events?limit=x", "", nil); code != 400 {
		t.Fatalf("bad limit = %d %s", code, body)
	}
}

func TestArtifactDownload(t *testing.T) {
	e := newEnv(t, 0)
	m := cptest.NewModel(t, "demo", "1", 10000, nil)
	if code, body := cptest.Upload(t, e.base, m); code != 201 {
		t.Fatalf("publish = %d %s", code, body)
	}
	url := e.base + "/api/v1/artifacts/" + m.Meta.Digest

	code, body := cptest.Do(t, "GET", url, "", nil)
	if code != 200 || !bytes.Equal(body, m.Artifact) {
		t.Fatalf("full download = %d, %d bytes", code, len(body))
	}

	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Range", "bytes=1000-1999")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	part, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(part, m.Artifact[1000:2000]) ||
		resp.Header.Get("Content-Range") != "bytes 1000-1999/10000" {
		t.Fatalf("range = %d %q, %d bytes", resp.StatusCode, resp.Header.Get("Content-Range"), len(part))
	}

	req.Header.Set("Range", "bytes=20000-")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
		t.Fatalf("range past the end = %d, want 416", resp.StatusCode)
	}

	hexOnly := strings.TrimPrefix(m.Meta.Digest, "sha256:")
	if code, body := cptest.Do(t, "GET", e.base+"/api/v1/artifacts/"+hexOnly, "", nil); code != 200 || !bytes.Equal(body, m.Artifact) {
		t.Fatalf("bare hex digest = %d", code)
	}
	unknown := trust.Digest([]byte("nothing"))
	if code, body := cptest.Do(t, "GET", e.base+"/api/v1/artifacts/"+unknown, "", nil); code != 404 || !strings.Contains(errorOf(t, body), "no artifact") {
		t.Fatalf("unknown digest = %d %s", code, body)
	}
	if code, body := cptest.Do(t, "GET", e.base+"/api/v1/artifacts/sha256:xyz", "", nil); code != 400 || !strings.Contains(errorOf(t, body), "malformed digest") {
		t.Fatalf("bad digest = %d %s", code, body)
	}
}

func TestRoutingErrorsAreJSON(t *testing.T) {
	e := newEnv(t, 0)
	code, body := cptest.Do(t, "DELETE", e.base+"/api/v1/models", "", nil)
	if code != 405 || !strings.Contains(errorOf(t, body), "not allowed") {
		t.Fatalf("wrong method = %d %s", code, body)
	}
	code, body = cptest.Do(t, "GET", e.base+"/api/v2/nothing", "", nil)
	if code != 404 || !strings.Contains(errorOf(t, body), "no such endpoint") {
		t.Fatalf("unknown path = %d %s", code, body)
	}
}
