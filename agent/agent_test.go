package agent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/starling-edge/starling/agent"
	"github.com/starling-edge/starling/agent/cache"
	"github.com/starling-edge/starling/agent/internal/testcontrol"
	"github.com/starling-edge/starling/agent/internal/testengine"
	_ "github.com/starling-edge/starling/agent/runtime/gotflite"
	"github.com/starling-edge/starling/agent/uplink"
	"github.com/starling-edge/starling/shared/trust"
	"github.com/starling-edge/starling/shared/wire"
)

const dev = "edge-7"

// testModel is one model version as the operator publishes it.
type testModel struct {
	version  string
	artifact []byte
	format   string
}

// demoModel is the real demo classifier (input "input" FP32 [1,8] ->
// "probabilities" FP32 [1,3]), run by the gotflite engine.
func demoModel(t *testing.T, version string) testModel {
	t.Helper()
	b, err := os.ReadFile("../testdata/models/demo/model.tflite")
	if err != nil {
		t.Fatal(err)
	}
	return testModel{version: version, artifact: b, format: "tflite"}
}

// reference is the demo model's first recorded case from the official
// TFLite interpreter.
type reference struct {
	input, output []float32
}

func demoReference(t *testing.T) reference {
	t.Helper()
	b, err := os.ReadFile("../testdata/models/demo/reference.json")
	if err != nil {
		t.Fatal(err)
	}
	var ref struct {
		Cases []struct {
			Inputs  []struct{ Data []float32 } `json:"inputs"`
			Outputs []struct{ Data []float32 } `json:"outputs"`
		} `json:"cases"`
	}
	if err := json.Unmarshal(b, &ref); err != nil || len(ref.Cases) == 0 {
		t.Fatalf("reference.json: %v", err)
	}
	c := ref.Cases[0]
	return reference{c.Inputs[0].Data, c.Outputs[0].Data}
}

// sign makes the signed metadata envelope for m.
func sign(t *testing.T, key *trust.PrivateKey, m testModel, expires time.Time) json.RawMessage {
	t.Helper()
	env, err := trust.SignModel(trust.ModelMetadata{
		Name: "demo", Version: m.version, Format: m.format,
		Digest: trust.Digest(m.artifact), Size: int64(len(m.artifact)),
		Created: time.Now().Add(-time.Hour), Expires: expires,
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

func desired(gen int64, metas ...json.RawMessage) wire.DesiredState {
	ds := wire.DesiredState{Generation: gen, Updated: time.Now()}
	for _, md := range metas {
		var env trust.Envelope
		json.Unmarshal(md, &env)
		var m trust.ModelMetadata
		json.Unmarshal(env.Signed, &m)
		ds.Models = append(ds.Models, wire.DesiredModel{Name: m.Name, Version: m.Version, Metadata: md})
	}
	return ds
}

// running is an agent started by startAgent.
type running struct {
	client *http.Client
	socket string
	stop   func() // cancels and waits for Run to return nil
}

func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "agent") // unix socket paths must stay short
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func startAgent(t *testing.T, broker, dataDir string, key *trust.PrivateKey, uo uplink.Options) *running {
	t.Helper()
	uo.ChunkTimeout = max(uo.ChunkTimeout, 2*time.Second)
	a, err := agent.New(agent.Options{
		DeviceID: dev, Broker: broker, DataDir: dataDir,
		Verifier: envelopeVerifier{trust.NewKeyring(1, key.Public())},
		Uplink:   uo,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	sock := filepath.Join(dataDir, "agent.sock")
	testcontrol.Wait(t, 5*time.Second, "socket", func() bool {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}
	var stopped bool
	r := &running{client: &http.Client{Transport: tr}, socket: sock}
	r.stop = func() {
		if stopped {
			return
		}
		stopped = true
		tr.CloseIdleConnections()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent Run: %v", err)
		}
		if _, err := os.Stat(sock); !os.IsNotExist(err) {
			t.Errorf("socket left behind: %v", err)
		}
		// The cache is closed and consistent.
		c, err := cache.Open(cache.Options{Path: filepath.Join(dataDir, "cache.db")})
		if err != nil {
			t.Fatalf("reopen cache: %v", err)
		}
		if err := c.Check(); err != nil {
			t.Error(err)
		}
		c.Close()
	}
	t.Cleanup(r.stop)
	return r
}

// infer sends the demo reference input and returns the status, the
// served version, and whether the output matches the official
// interpreter's (within 1e-5).
func (r *running) infer(t *testing.T) (int, string, bool) {
	t.Helper()
	ref := demoReference(t)
	in, _ := json.Marshal(ref.input)
	body := `{"inputs":[{"name":"input","shape":[1,8],"datatype":"FP32","data":` + string(in) + `}]}`
	resp, err := r.client.Post("http://agent/v2/models/demo/infer", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Version string `json:"model_version"`
		Outputs []struct {
			Name string    `json:"name"`
			Data []float32 `json:"data"`
		} `json:"outputs"`
	}
	json.NewDecoder(resp.Body).Decode(&out)
	match := len(out.Outputs) == 1 && out.Outputs[0].Name == "probabilities" && len(out.Outputs[0].Data) == len(ref.output)
	for i := 0; match && i < len(ref.output); i++ {
		match = math.Abs(float64(out.Outputs[0].Data[i]-ref.output[i])) < 1e-5
	}
	return resp.StatusCode, out.Version, match
}

func waitState(t *testing.T, ctl *testcontrol.Control, version, state string) wire.ModelStatus {
	t.Helper()
	var ms wire.ModelStatus
	testcontrol.Wait(t, 10*time.Second, "demo:"+version+" "+state, func() bool {
		var ok bool
		ms, ok = ctl.ModelState(dev, "demo", version)
		return ok && ms.State == state
	})
	return ms
}

func TestActivateThenRejectKeepsServing(t *testing.T) {
	key, _ := trust.GenerateKey()
	otherKey, _ := trust.GenerateKey()
	future := time.Now().Add(24 * time.Hour)
	v2 := demoModel(t, "2")
	// The same network with 16 bytes of padding: a distinct artifact.
	v2.artifact = append(v2.artifact, make([]byte, 16)...)

	tests := []struct {
		name      string
		setup     func(ctl *testcontrol.Control) json.RawMessage // returns v2's metadata
		state     string
		wantCheck string
	}{
		{"tampered artifact", func(ctl *testcontrol.Control) json.RawMessage {
			bad := bytes.Clone(v2.artifact)
			bad[len(bad)-1] ^= 0x20
			ctl.ServeAs(trust.Digest(v2.artifact), bad)
			return sign(t, key, v2, future)
		}, wire.StateRejected, "digest"},
		{"signed by an unknown key", func(ctl *testcontrol.Control) json.RawMessage {
			ctl.AddArtifact(v2.artifact)
			return sign(t, otherKey, v2, future)
		}, wire.StateRejected, "unknown-key"},
		{"expired metadata", func(ctl *testcontrol.Control) json.RawMessage {
			ctl.AddArtifact(v2.artifact)
			return sign(t, key, v2, time.Now().Add(-time.Minute))
		}, wire.StateRejected, "expiry"},
		{"artifact the engine cannot load", func(ctl *testcontrol.Control) json.RawMessage {
			broken := demoModel(t, "2")
			broken.artifact = broken.artifact[:len(broken.artifact)/2] // truncated flatbuffer
			ctl.AddArtifact(broken.artifact)
			return sign(t, key, broken, future)
		}, wire.StateRejected, "load"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctl := testcontrol.Start(t)
			v1 := demoModel(t, "1")
			ctl.AddArtifact(v1.artifact)
			ctl.PublishDesired(dev, desired(1, sign(t, key, v1, future)))
			ag := startAgent(t, ctl.Broker(), shortDir(t), key, uplink.Options{})

			waitState(t, ctl, "1", wire.StateActive)
			if code, v, ok := ag.infer(t); code != 200 || v != "1" || !ok {
				t.Fatalf("v1 infer: %d version %q, output matches reference: %v", code, v, ok)
			}
			// The report that says "active" may precede the one that
			// closes the reconcile with its generation.
			testcontrol.Wait(t, 5*time.Second, "generation 1 reported", func() bool {
				rs, _ := ctl.Reported(dev)
				return rs.Generation == 1
			})
			rs, _ := ctl.Reported(dev)
			if len(rs.Engines) == 0 || rs.OS == "" || rs.AgentVersion == "" {
				t.Errorf("reported state %+v lacks engines/os/version", rs)
			}

			ctl.PublishDesired(dev, desired(2, tt.setup(ctl)))
			ms := waitState(t, ctl, "2", tt.state)
			if ms.Check != tt.wantCheck || ms.Error == "" {
				t.Errorf("reported %+v, want check %q with an error message", ms, tt.wantCheck)
			}
			testcontrol.Wait(t, 5*time.Second, "rejection event", func() bool {
				for _, e := range ctl.Events(dev) {
					if e.Kind == wire.EventRejected && e.Version == "2" && e.Check == tt.wantCheck {
						return true
					}
				}
				return false
			})
			if code, v, ok := ag.infer(t); code != 200 || v != "1" || !ok {
				t.Errorf("after rejection: %d version %q (reference match %v), want v1 still serving", code, v, ok)
			}
			if ms, _ := ctl.ModelState(dev, "demo", "1"); ms.State != wire.StateActive {
				t.Errorf("v1 reported %s after v2's rejection, want active", ms.State)
			}
		})
	}
}

func TestUpgradeRetireAndRestartServesCache(t *testing.T) {
	key, _ := trust.GenerateKey()
	future := time.Now().Add(24 * time.Hour)
	ctl := testcontrol.Start(t)
	v1, v2 := demoModel(t, "1"), demoModel(t, "2")
	v2.artifact = append(v2.artifact, make([]byte, 16)...)
	ctl.AddArtifact(v1.artifact)
	ctl.AddArtifact(v2.artifact)
	m1, m2 := sign(t, key, v1, future), sign(t, key, v2, future)
	dir := shortDir(t)

	ctl.PublishDesired(dev, desired(1, m1))
	ag := startAgent(t, ctl.Broker(), dir, key, uplink.Options{})
	waitState(t, ctl, "1", wire.StateActive)
	ctl.PublishDesired(dev, desired(2, m2))
	waitState(t, ctl, "2", wire.StateActive)
	waitState(t, ctl, "1", wire.StatePrevious)
	if code, v, ok := ag.infer(t); code != 200 || v != "2" || !ok {
		t.Fatalf("after upgrade: %d %q (reference match %v)", code, v, ok)
	}
	ag.stop()

	// No control plane at all: the cached active version serves at once.
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadURL := "mqtt://" + dead.Addr().String()
	dead.Close()
	ag = startAgent(t, deadURL, dir, key, uplink.Options{})
	if code, v, _ := ag.infer(t); code != 200 || v != "2" {
		t.Fatalf("offline restart: %d version %q, want v2 served from cache", code, v)
	}
	ag.stop()

	// Back online, the model is no longer desired: it is retired.
	ag = startAgent(t, ctl.Broker(), dir, key, uplink.Options{})
	ctl.PublishDesired(dev, desired(3))
	waitState(t, ctl, "2", wire.StateRetired)
	if code, _, _ := ag.infer(t); code != 404 {
		t.Errorf("retired model answered %d, want 404", code)
	}
}

func TestResumeAfterRestart(t *testing.T) {
	key, _ := trust.GenerateKey()
	ctl := testcontrol.Start(t)
	const chunk = 512
	v1 := demoModel(t, "1") // 3796 bytes: 8 chunks
	ctl.AddArtifact(v1.artifact)
	ctl.PublishDesired(dev, desired(1, sign(t, key, v1, time.Now().Add(24*time.Hour))))
	// Stall every chunk from 4*chunk on: the first four arrive and are
	// persisted, then the download hangs.
	ctl.SetFetchHook(func(r testcontrol.Request) testcontrol.Action {
		if r.Offset >= 4*chunk {
			return testcontrol.Action{Delay: time.Hour}
		}
		return testcontrol.Action{}
	})
	dir := shortDir(t)
	ag := startAgent(t, ctl.Broker(), dir, key, uplink.Options{ChunkSize: chunk, Window: 4})
	// The request for the 8th chunk goes out only once the first four
	// answers were handed to the cache.
	testcontrol.Wait(t, 10*time.Second, "stalled download", func() bool {
		for _, r := range ctl.Requests(dev) {
			if r.Offset == 7*chunk {
				return true
			}
		}
		return false
	})
	ag.stop()
	before := len(ctl.Requests(dev))

	ctl.SetFetchHook(nil)
	ag = startAgent(t, ctl.Broker(), dir, key, uplink.Options{ChunkSize: chunk, Window: 4})
	waitState(t, ctl, "1", wire.StateActive)
	after := ctl.Requests(dev)[before:]
	if len(after) == 0 || after[0].Offset != 4*chunk {
		t.Fatalf("first request after restart: %+v, want offset %d", after, 4*chunk)
	}
	for _, r := range after {
		if r.Offset < 4*chunk {
			t.Errorf("refetched offset %d already held", r.Offset)
		}
	}
	if code, v, _ := ag.infer(t); code != 200 || v != "1" {
		t.Errorf("resumed model: %d %q", code, v)
	}
}

func TestNewerDesiredStateSupersedesStalledFetch(t *testing.T) {
	key, _ := trust.GenerateKey()
	future := time.Now().Add(24 * time.Hour)
	ctl := testcontrol.Start(t)
	// v1 is a test-engine artifact whose download stalls; v2 is the demo.
	v1 := testModel{version: "1", artifact: testengine.Artifact(1), format: testengine.Format}
	v2 := demoModel(t, "2")
	ctl.AddArtifact(v1.artifact)
	ctl.AddArtifact(v2.artifact)
	stalled := trust.Digest(v1.artifact)
	ctl.SetFetchHook(func(r testcontrol.Request) testcontrol.Action {
		if r.Digest == stalled {
			return testcontrol.Action{Delay: time.Hour}
		}
		return testcontrol.Action{}
	})
	ctl.PublishDesired(dev, desired(1, sign(t, key, v1, future)))
	// A chunk timeout far beyond the wait below: v2 can only become
	// active in time if the new desired state cancels v1's fetch.
	ag := startAgent(t, ctl.Broker(), shortDir(t), key, uplink.Options{ChunkTimeout: time.Minute})
	testcontrol.Wait(t, 5*time.Second, "v1 fetch requested", func() bool { return len(ctl.Requests(dev)) > 0 })
	ctl.PublishDesired(dev, desired(2, sign(t, key, v2, future)))
	waitState(t, ctl, "2", wire.StateActive)
	if code, v, _ := ag.infer(t); code != 200 || v != "2" {
		t.Errorf("after supersede: %d %q, want v2", code, v)
	}
	// The abandoned download is retired, not left "fetching".
	waitState(t, ctl, "1", wire.StateRetired)
}

// envelopeVerifier verifies the single-key signed envelope that the fake
// control plane (internal/testcontrol) puts in each desired model. The
// agent itself verifies through TUF (agent/tufclient, tested in
// shared/trust/tuf and end to end in tools/e2e); these tests exercise the
// reconciler, cache and serving around any verifier.
type envelopeVerifier struct{ kr *trust.Keyring }

func (envelopeVerifier) Refresh(context.Context) error { return nil }

func (v envelopeVerifier) Verify(dm wire.DesiredModel) (*trust.ModelMetadata, []byte, error) {
	md, err := v.kr.VerifyModel(dm.Metadata, time.Now())
	return md, dm.Metadata, err
}
