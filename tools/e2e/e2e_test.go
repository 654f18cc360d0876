// Package e2e runs Starling end to end: the real starling-control (in
// process, so a test can inject faults into artifact delivery), real
// starling-agent processes, the real starlingctl CLI, a real MQTT broker
// (the embedded one and a Mosquitto process) and the real demo model.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/starling-edge/starling/controlplane"
	"github.com/starling-edge/starling/shared/testbroker"
	"github.com/starling-edge/starling/shared/trust"
	"github.com/starling-edge/starling/shared/wire"
)

// bin holds the binaries built once for the whole suite.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "starling-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	build := exec.Command("go", "build", "-o", dir+"/",
		"github.com/starling-edge/starling/agent/cmd/starling-agent",
		"github.com/starling-edge/starling/tools/starlingctl")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building binaries: %v\n%s", err, out)
		os.Exit(1)
	}
	bin = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const demoModel = "../../testdata/models/demo/model.tflite"

// fleet is one control plane, one operator key and the agents started.
type fleet struct {
	t       *testing.T
	cp      *controlplane.Server
	api     string
	dir     string
	keys    string
	hookMu  sync.Mutex
	hook    func(deviceID string, req wire.FetchRequest) bool
	fetches []wire.FetchRequest
}

// newFleet starts a control plane: with its embedded broker when brokerURL
// is empty, else against that external broker. Each opt may change the
// control plane's options before it starts.
func newFleet(t *testing.T, brokerURL string, opts ...func(*controlplane.Options)) *fleet {
	t.Helper()
	f := &fleet{t: t, dir: t.TempDir()}
	o := controlplane.Options{
		DataDir:   filepath.Join(f.dir, "control"),
		HTTPAddr:  "127.0.0.1:0",
		MQTTAddr:  "127.0.0.1:0",
		BrokerURL: brokerURL,
		// Agents that are not enrolled use the development listener;
		// enrollment_test.go runs agents with certificates over TLS.
		InsecureMQTTAddr: insecureIfEmbedded(brokerURL),
		DeviceAddr:       "127.0.0.1:0",
		FetchHook: func(deviceID string, req wire.FetchRequest) bool {
			f.hookMu.Lock()
			f.fetches = append(f.fetches, req)
			h := f.hook
			f.hookMu.Unlock()
			if h != nil {
				return h(deviceID, req)
			}
			return true
		},
	}
	for _, opt := range opts {
		opt(&o)
	}
	cp, err := controlplane.New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := cp.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cp.Close() })
	f.cp = cp
	f.api = "http://" + cp.HTTPAddr()
	f.keys = filepath.Join(f.dir, "keys")
	f.ctl("keys", "init", "--dir", f.keys)
	return f
}

func (f *fleet) setHook(h func(string, wire.FetchRequest) bool) {
	f.hookMu.Lock()
	f.hook = h
	f.hookMu.Unlock()
}

func (f *fleet) fetchLog() []wire.FetchRequest {
	f.hookMu.Lock()
	defer f.hookMu.Unlock()
	return append([]wire.FetchRequest(nil), f.fetches...)
}

// ctl runs starlingctl against the control plane and returns its output.
func (f *fleet) ctl(args ...string) string {
	f.t.Helper()
	out, err := f.ctlErr(args...)
	if err != nil {
		f.t.Fatalf("starlingctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (f *fleet) ctlErr(args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(bin, "starlingctl"), args...)
	cmd.Env = append(os.Environ(), "STARLING_SERVER="+f.api, "STARLING_KEYS="+f.keys,
		"STARLING_TOKEN_FILE="+filepath.Join(f.dir, "control", controlplane.AdminTokenFile))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// push signs and publishes a copy of the demo model as demo:version. Each
// version's artifact differs (trailing padding, which a flatbuffer reader
// ignores) so that each has its own digest and stored file.
func (f *fleet) push(version string, extra ...string) string {
	f.t.Helper()
	file := f.demoFile(version)
	args := append([]string{"model", "push", "--name", "demo", "--version", version, "--file", file}, extra...)
	f.ctl(args...)
	return file
}

// pushErr is push for a push that may fail: it returns starlingctl's output.
func (f *fleet) pushErr(version string, extra ...string) (string, error) {
	f.t.Helper()
	args := append([]string{"model", "push", "--name", "demo", "--version", version, "--file", f.demoFile(version)}, extra...)
	return f.ctlErr(args...)
}

// demoFile writes demo:version's artifact and returns its path.
func (f *fleet) demoFile(version string) string {
	f.t.Helper()
	b, err := os.ReadFile(demoModel)
	if err != nil {
		f.t.Fatal(err)
	}
	b = append(b, []byte(strings.Repeat("\x00", 16)+"v"+version)...)
	file := filepath.Join(f.dir, "demo-"+version+".tflite")
	if err := os.WriteFile(file, b, 0o644); err != nil {
		f.t.Fatal(err)
	}
	return file
}

// freshKey writes a new signing key, one no root names, in the key file
// format starlingctl reads, and returns its path.
func (f *fleet) freshKey(name string) string {
	f.t.Helper()
	k, err := trust.GenerateKey()
	if err != nil {
		f.t.Fatal(err)
	}
	path := filepath.Join(f.dir, name)
	if err := trust.WriteKeyFile(path, k.PrivateFile(), 0o600); err != nil {
		f.t.Fatal(err)
	}
	return path
}

// agent is a starling-agent process.
type agent struct {
	id     string
	dir    string
	socket string
	cmd    *exec.Cmd
	exited chan struct{}
	log    *bytes.Buffer
	client *http.Client
}

func (f *fleet) startAgent(id, dataDir string, extra ...string) *agent {
	f.t.Helper()
	a := &agent{id: id, dir: dataDir, socket: filepath.Join(dataDir, "agent.sock"), exited: make(chan struct{}), log: &bytes.Buffer{}}
	args := append([]string{
		"--device-id", id, "--broker", f.agentBroker(), "--data", dataDir,
		"--socket", a.socket, "--trust-root", filepath.Join(f.keys, "root.json"),
	}, extra...)
	a.cmd = exec.Command(filepath.Join(bin, "starling-agent"), args...)
	a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	if err := a.cmd.Start(); err != nil {
		f.t.Fatal(err)
	}
	go func() { a.cmd.Wait(); close(a.exited) }()
	a.client = &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", a.socket)
		}},
	}
	f.t.Cleanup(func() { a.stop(f.t) })
	return a
}

// stop ends the agent with SIGTERM (a clean shutdown).
func (a *agent) stop(t *testing.T) {
	select {
	case <-a.exited:
		return
	default:
	}
	a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-a.exited:
	case <-time.After(10 * time.Second):
		a.cmd.Process.Kill()
		<-a.exited
		t.Errorf("agent %s did not stop on SIGTERM within 10s; log:\n%s", a.id, a.log)
	}
}

// kill ends the agent with SIGKILL: no cleanup of any kind.
func (a *agent) kill() {
	a.cmd.Process.Kill()
	<-a.exited
}

// device is the control plane's view of a device.
type device struct {
	ID       string             `json:"id"`
	Status   string             `json:"status"`
	Reported wire.ReportedState `json:"reported"`
}

func (f *fleet) device(id string) (device, error) {
	var d device
	resp, err := f.get("/api/v1/devices/" + id)
	if err != nil {
		return d, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return d, fmt.Errorf("status %d", resp.StatusCode)
	}
	return d, json.NewDecoder(resp.Body).Decode(&d)
}

func (f *fleet) events(id string) []wire.Event {
	var ev []wire.Event
	resp, err := f.get("/api/v1/devices/" + id + "/events")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	json.NewDecoder(resp.Body).Decode(&ev)
	return ev
}

// waitFor polls cond until it holds or 30 s pass.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	last := ""
	for time.Now().Before(deadline) {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s; last state: %s", what, last)
}

func (f *fleet) waitOnline(id string) {
	f.t.Helper()
	waitFor(f.t, id+" online", func() (bool, string) {
		d, err := f.device(id)
		return err == nil && d.Status == wire.Online, fmt.Sprintf("%+v %v", d, err)
	})
}

func (f *fleet) waitModelState(id, version, state string) wire.ModelStatus {
	f.t.Helper()
	var found wire.ModelStatus
	waitFor(f.t, fmt.Sprintf("%s demo:%s %s", id, version, state), func() (bool, string) {
		d, err := f.device(id)
		if err != nil {
			return false, err.Error()
		}
		for _, m := range d.Reported.Models {
			if m.Name == "demo" && m.Version == version && m.State == state {
				found = m
				return true, ""
			}
		}
		b, _ := json.Marshal(d.Reported.Models)
		return false, string(b)
	})
	return found
}

func (f *fleet) assign(id string, versions ...string) {
	f.t.Helper()
	args := []string{"device", "assign", id}
	for _, v := range versions {
		args = append(args, "--model", "demo:"+v)
	}
	f.ctl(args...)
}

// reference is the official interpreter's recorded output for the demo model.
type reference struct {
	Cases []struct {
		Inputs  []refTensor `json:"inputs"`
		Outputs []refTensor `json:"outputs"`
	} `json:"cases"`
}

type refTensor struct {
	Name     string    `json:"name"`
	Datatype string    `json:"datatype"`
	Shape    []int64   `json:"shape"`
	Data     []float64 `json:"data"`
}

func loadReference(t *testing.T) reference {
	t.Helper()
	b, err := os.ReadFile("../../testdata/models/demo/reference.json")
	if err != nil {
		t.Fatal(err)
	}
	var r reference
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Cases) == 0 {
		t.Fatal("reference has no cases")
	}
	return r
}

type inferResponse struct {
	ModelName    string      `json:"model_name"`
	ModelVersion string      `json:"model_version"`
	Outputs      []refTensor `json:"outputs"`
	Error        string      `json:"error"`
}

func (a *agent) infer(t *testing.T, body string) (int, inferResponse) {
	t.Helper()
	resp, err := a.client.Post("http://agent/v2/models/demo/infer", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("infer: %v", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var r inferResponse
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatalf("infer answer %d is not JSON: %q", resp.StatusCode, raw)
	}
	return resp.StatusCode, r
}

// checkServes asserts that the agent answers every reference case with the
// official interpreter's output, from the given version.
func checkServes(t *testing.T, a *agent, ref reference, version string) {
	t.Helper()
	for i, c := range ref.Cases {
		body, _ := json.Marshal(map[string]any{"inputs": c.Inputs})
		code, r := a.infer(t, string(body))
		if code != 200 {
			t.Fatalf("case %d: status %d: %s", i, code, r.Error)
		}
		if r.ModelVersion != version {
			t.Fatalf("case %d: served by version %q, want %q", i, r.ModelVersion, version)
		}
		if len(r.Outputs) != len(c.Outputs) {
			t.Fatalf("case %d: %d outputs, want %d", i, len(r.Outputs), len(c.Outputs))
		}
		for j, want := range c.Outputs {
			got := r.Outputs[j]
			if got.Name != want.Name || len(got.Data) != len(want.Data) {
				t.Fatalf("case %d output %d: got %s%v, want %s%v", i, j, got.Name, got.Shape, want.Name, want.Shape)
			}
			for k := range want.Data {
				if math.Abs(got.Data[k]-want.Data[k]) > 1e-5 {
					t.Fatalf("case %d output %s[%d] = %v, official interpreter %v", i, want.Name, k, got.Data[k], want.Data[k])
				}
			}
		}
	}
}

func brokers(t *testing.T) map[string]func(t *testing.T) string {
	return map[string]func(t *testing.T) string{
		"embedded":  func(t *testing.T) string { return "" },
		"mosquitto": func(t *testing.T) string { return testbroker.Mosquitto(t) },
	}
}

// TestEndToEnd: push, assign, serve; then every rejection keeps the served
// model; then a new good version swaps in.
func TestEndToEnd(t *testing.T) {
	for name, broker := range brokers(t) {
		t.Run(name, func(t *testing.T) {
			f := newFleet(t, broker(t))
			ref := loadReference(t)
			a := f.startAgent("cam-1", filepath.Join(f.dir, "agent"))
			f.waitOnline("cam-1")
			if out := f.ctl("device", "list"); !strings.Contains(out, "cam-1") {
				t.Fatalf("device list does not show cam-1:\n%s", out)
			}

			f.push("1")
			f.assign("cam-1", "1")
			f.waitModelState("cam-1", "1", wire.StateActive)
			checkServes(t, a, ref, "1")

			t.Run("tampered artifact", func(t *testing.T) {
				f.push("2")
				// Corrupt the stored copy, as a compromised store or a
				// flipped bit in transit would.
				corruptArtifact(t, filepath.Join(f.dir, "control"))
				f.assign("cam-1", "2")
				m := f.waitModelState("cam-1", "2", wire.StateRejected)
				if m.Check != "digest" {
					t.Fatalf("rejected with check %q (%s), want digest", m.Check, m.Error)
				}
				waitEvent(t, f, "cam-1", "2", "digest")
				checkServes(t, a, ref, "1")
			})

			t.Run("wrong key", func(t *testing.T) {
				// Targets signed by a key root does not name: the control
				// plane refuses the upload. A device refuses such targets
				// too when a compromised control plane serves them
				// (attacks_test.go, "unknown key").
				out, err := f.pushErr("3", "--key", f.freshKey("other-targets.key"))
				if err == nil || !strings.Contains(out, "unknown-key") {
					t.Fatalf("push signed by an unknown key: err %v, output %q; want a refusal naming unknown-key", err, out)
				}
				checkServes(t, a, ref, "1")
			})

			t.Run("expired metadata", func(t *testing.T) {
				f.push("4", "--expires", "2s")
				time.Sleep(2100 * time.Millisecond)
				f.assign("cam-1", "4")
				m := f.waitModelState("cam-1", "4", wire.StateRejected)
				if m.Check != "expiry" {
					t.Fatalf("rejected with check %q (%s), want expiry", m.Check, m.Error)
				}
				waitEvent(t, f, "cam-1", "4", "expiry")
				checkServes(t, a, ref, "1")
			})

			t.Run("good update swaps in", func(t *testing.T) {
				f.push("5")
				f.assign("cam-1", "5")
				f.waitModelState("cam-1", "5", wire.StateActive)
				checkServes(t, a, ref, "5")
			})

			t.Run("malformed requests", func(t *testing.T) {
				for _, tc := range []struct{ name, body, path string }{
					{"invalid json", `{"inputs": [`, "/v2/models/demo/infer"},
					{"wrong shape", `{"inputs":[{"name":"input","datatype":"FP32","shape":[1,7],"data":[1,2,3,4,5,6,7]}]}`, "/v2/models/demo/infer"},
					{"wrong datatype", `{"inputs":[{"name":"input","datatype":"INT32","shape":[1,8],"data":[1,2,3,4,5,6,7,8]}]}`, "/v2/models/demo/infer"},
					{"unknown model", `{"inputs":[{"name":"input","datatype":"FP32","shape":[1,8],"data":[1,2,3,4,5,6,7,8]}]}`, "/v2/models/nope/infer"},
				} {
					resp, err := a.client.Post("http://agent"+tc.path, "application/json", strings.NewReader(tc.body))
					if err != nil {
						t.Fatalf("%s: %v", tc.name, err)
					}
					var e struct {
						Error string `json:"error"`
					}
					json.NewDecoder(resp.Body).Decode(&e)
					resp.Body.Close()
					if resp.StatusCode < 400 || resp.StatusCode >= 500 || e.Error == "" {
						t.Errorf("%s: status %d error %q, want 4xx with a message", tc.name, resp.StatusCode, e.Error)
					}
				}
				checkServes(t, a, ref, "5")
			})
		})
	}
}

func waitEvent(t *testing.T, f *fleet, id, version, check string) {
	t.Helper()
	waitFor(t, "rejection event "+check, func() (bool, string) {
		evs := f.events(id)
		for _, e := range evs {
			if e.Kind == wire.EventRejected && e.Version == version && e.Check == check {
				return true, ""
			}
		}
		b, _ := json.Marshal(evs)
		return false, string(b)
	})
}

// corruptArtifact flips a byte in the newest artifact the control plane
// stores under dir/artifacts.
func corruptArtifact(t *testing.T, dir string) {
	t.Helper()
	var newest string
	var newestTime time.Time
	filepath.Walk(filepath.Join(dir, "artifacts"), func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() && info.ModTime().After(newestTime) {
			newest, newestTime = p, info.ModTime()
		}
		return nil
	})
	if newest == "" {
		t.Fatal("no stored artifact found under " + dir)
	}
	b, err := os.ReadFile(newest)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(newest, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// insecureIfEmbedded opens the embedded broker's development listener.
func insecureIfEmbedded(brokerURL string) string {
	if brokerURL == "" {
		return "127.0.0.1:0"
	}
	return ""
}

// agentBroker is the broker URL for agents started without enrollment.
func (f *fleet) agentBroker() string {
	if u := f.cp.InsecureBrokerURL(); u != "" {
		return u
	}
	return f.cp.BrokerURL()
}

// get calls the API with the bootstrap admin token.
func (f *fleet) get(path string) (*http.Response, error) {
	tok, err := os.ReadFile(filepath.Join(f.dir, "control", controlplane.AdminTokenFile))
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequest("GET", f.api+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	return http.DefaultClient.Do(req)
}
