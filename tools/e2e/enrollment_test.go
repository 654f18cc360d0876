package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/starling-edge/starling/agent/enroll"
	"github.com/starling-edge/starling/controlplane"
	"github.com/starling-edge/starling/shared/testbroker"
	"github.com/starling-edge/starling/shared/wire"
)

var (
	controlBinOnce sync.Once
	controlBinErr  error
)

// controlBin builds starling-control (for its mosquitto-config command)
// next to the suite's other binaries.
func controlBin(t *testing.T) string {
	t.Helper()
	controlBinOnce.Do(func() {
		build := exec.Command("go", "build", "-o", bin+"/", "github.com/starling-edge/starling/controlplane/cmd/starling-control")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			controlBinErr = fmt.Errorf("building starling-control: %v\n%s", err, out)
		}
	})
	if controlBinErr != nil {
		t.Fatal(controlBinErr)
	}
	return filepath.Join(bin, "starling-control")
}

// tlsFleets start a control plane whose devices may only use TLS: the
// embedded broker without its development listener, or a Mosquitto run
// from the configuration `starling-control mosquitto-config` writes, kept
// current by the control plane (Options.MosquittoDir).
var tlsFleets = []struct {
	name  string
	start func(t *testing.T) *fleet
}{
	{"embedded", func(t *testing.T) *fleet {
		return newFleet(t, "", func(o *controlplane.Options) { o.InsecureMQTTAddr = "" })
	}},
	{"mosquitto", func(t *testing.T) *fleet {
		return newFleet(t, "", func(o *controlplane.Options) {
			dir := filepath.Join(filepath.Dir(o.DataDir), "mosquitto")
			addr := fmt.Sprintf("127.0.0.1:%d", testbroker.FreePort(t))
			cmd := exec.Command(controlBin(t), "mosquitto-config", "--data", o.DataDir, "--out", dir, "--listen", addr)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("mosquitto-config: %v\n%s", err, out)
			}
			testbroker.MosquittoFile(t, filepath.Join(dir, "mosquitto.conf"), addr)
			o.BrokerURL, o.MosquittoDir, o.InsecureMQTTAddr = "mqtts://"+addr, dir, ""
		})
	}},
}

// enrollToken makes a one-time token with starlingctl (bound to device
// when it is not empty) and returns it with the CA fingerprint.
func (f *fleet) enrollToken(device string) (token, fingerprint string) {
	f.t.Helper()
	args := []string{"device", "enroll-token", "--json"}
	if device != "" {
		args = append(args, "--device", device)
	}
	var r struct {
		Token       string `json:"token"`
		Fingerprint string `json:"ca_fingerprint"`
	}
	out := f.ctl(args...)
	if err := json.Unmarshal([]byte(out), &r); err != nil || r.Token == "" || !strings.HasPrefix(r.Fingerprint, "sha256:") {
		f.t.Fatalf("enroll-token answer %q: %v", out, err)
	}
	return r.Token, r.Fingerprint
}

// startTLSAgent starts an agent on the TLS broker; extra carries the
// enrollment flags (none once the data directory holds an identity).
func (f *fleet) startTLSAgent(name, dataDir string, extra ...string) *agent {
	f.t.Helper()
	a := &agent{id: name, dir: dataDir, socket: filepath.Join(dataDir, "agent.sock"), exited: make(chan struct{}), log: &bytes.Buffer{}}
	args := append([]string{
		"--broker", f.cp.BrokerURL(), "--data", dataDir,
		"--socket", a.socket, "--trust-root", filepath.Join(f.keys, "root.json"),
	}, extra...)
	a.cmd = exec.Command(filepath.Join(bin, "starling-agent"), args...)
	a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	if err := a.cmd.Start(); err != nil {
		f.t.Fatal(err)
	}
	go func() { a.cmd.Wait(); close(a.exited) }()
	a.client = socketClient(a.socket)
	f.t.Cleanup(func() { a.stop(f.t) })
	return a
}

// waitExit waits for an agent that must give up, and returns its log.
func (a *agent) waitExit(t *testing.T) string {
	t.Helper()
	select {
	case <-a.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("agent %s still runs; log:\n%s", a.id, a.log)
	}
	if a.cmd.ProcessState.Success() {
		t.Fatalf("agent %s exited 0; log:\n%s", a.id, a.log)
	}
	return a.log.String()
}

// identityTLS is a client configuration with the identity an agent stored.
func identityTLS(t *testing.T, dataDir string) *tls.Config {
	t.Helper()
	id, err := enroll.Load(filepath.Join(dataDir, "identity"))
	if err != nil {
		t.Fatal(err)
	}
	return id.TLSConfig()
}

// TestEnrollment: agents enroll with one-time tokens (CA pinned by
// fingerprint, and by file) and then use only TLS with their device
// certificates; a model is assigned and served; a replayed token and a
// disagreeing device id are refused; a restart needs no token; a revoked
// device is cut off within 10 s while the other keeps working. On the
// embedded broker and on Mosquitto.
func TestEnrollment(t *testing.T) {
	ref := loadReference(t)
	for _, fl := range tlsFleets {
		t.Run(fl.name, func(t *testing.T) {
			f := fl.start(t)
			if !strings.HasPrefix(f.cp.BrokerURL(), "mqtts://") || f.cp.InsecureBrokerURL() != "" {
				t.Fatalf("broker %q (development listener %q): want TLS only", f.cp.BrokerURL(), f.cp.InsecureBrokerURL())
			}
			deviceAPI := f.cp.DeviceURL()
			tok1, fp := f.enrollToken("cam-1")
			tok2, _ := f.enrollToken("")
			tokFile := filepath.Join(f.dir, "cam-2.token")
			if err := os.WriteFile(tokFile, []byte(tok2+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			dir1, dir2 := filepath.Join(f.dir, "cam-1"), filepath.Join(f.dir, "cam-2")
			// cam-1: id from its bound token, CA pinned by fingerprint,
			// everything over MQTT.
			a1 := f.startTLSAgent("cam-1", dir1, "--enroll-url", deviceAPI, "--enroll-token", tok1, "--ca-fingerprint", fp)
			// cam-2: names itself, CA pinned by file, metadata and
			// artifacts over HTTPS from the device API.
			a2 := f.startTLSAgent("cam-2", dir2, "--device-id", "cam-2", "--enroll-url", deviceAPI, "--enroll-token-file", tokFile,
				"--ca-file", filepath.Join(f.dir, "control", "fleet", "ca.crt"), "--metadata-url", deviceAPI, "--artifact-url", deviceAPI)
			f.waitOnline("cam-1")
			f.waitOnline("cam-2")
			if st, err := os.Stat(filepath.Join(dir1, "identity", enroll.KeyFile)); err != nil || st.Mode().Perm() != 0o600 {
				t.Fatalf("device key: %v %v", err, st)
			}

			f.push("1")
			f.assign("cam-1", "1")
			f.assign("cam-2", "1")
			f.waitModelState("cam-1", "1", wire.StateActive)
			f.waitModelState("cam-2", "1", wire.StateActive)
			checkServes(t, a1, ref, "1")
			checkServes(t, a2, ref, "1")

			t.Run("replayed token refused", func(t *testing.T) {
				a := f.startTLSAgent("thief", filepath.Join(f.dir, "thief"), "--enroll-url", deviceAPI, "--enroll-token", tok1, "--ca-fingerprint", fp)
				if log := a.waitExit(t); !strings.Contains(log, "already used") {
					t.Fatalf("replay not refused as such; log:\n%s", log)
				}
			})

			t.Run("restart needs no token; id comes from the certificate", func(t *testing.T) {
				a1.stop(t)
				waitFor(t, "cam-1 offline", func() (bool, string) {
					d, err := f.device("cam-1")
					return err == nil && d.Status == wire.Offline, fmt.Sprintf("%+v %v", d.Status, err)
				})
				a := f.startTLSAgent("cam-1", dir1, "--device-id", "cam-9")
				if log := a.waitExit(t); !strings.Contains(log, `for device "cam-1", not "cam-9"`) {
					t.Fatalf("disagreeing --device-id not refused; log:\n%s", log)
				}
				a1 = f.startTLSAgent("cam-1", dir1)
				waitFor(t, "cam-1 serving again", func() (bool, string) {
					resp, err := a1.client.Get("http://agent/v2/models/demo/ready")
					if err != nil {
						return false, err.Error()
					}
					resp.Body.Close()
					return resp.StatusCode == 200, resp.Status
				})
				checkServes(t, a1, ref, "1")
				f.waitOnline("cam-1")
			})

			t.Run("revoked device cut off within 10s", func(t *testing.T) {
				cam2 := identityTLS(t, dir2)
				revoked := time.Now()
				f.ctl("device", "revoke", "cam-2")
				// The broker refuses the certificate (Mosquitto once it has
				// reloaded its CRL) and so does the device API.
				waitFor(t, "broker refusing cam-2's certificate", func() (bool, string) {
					err := dialMQTT(f.cp.BrokerURL(), "cam-2", cam2)
					return err != nil, "still connects"
				})
				resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: cam2}}).Get(deviceAPI + "/api/v1/device/self")
				if err == nil {
					resp.Body.Close()
				}
				if err == nil && resp.StatusCode != http.StatusForbidden {
					t.Fatalf("device API answered %d to the revoked certificate", resp.StatusCode)
				}
				if fl.name == "embedded" {
					// The embedded broker closes the open connection: the
					// will reports the device offline.
					waitFor(t, "cam-2 offline", func() (bool, string) {
						d, err := f.device("cam-2")
						return err == nil && d.Status == wire.Offline, fmt.Sprintf("%+v %v", d.Status, err)
					})
				}
				if d := time.Since(revoked); d > 10*time.Second {
					t.Fatalf("cut-off took %s", d)
				}
				// New desired state reaches cam-1, not cam-2, which keeps
				// serving what it has.
				f.push("2")
				f.assign("cam-2", "2")
				f.assign("cam-1", "2")
				f.waitModelState("cam-1", "2", wire.StateActive)
				checkServes(t, a1, ref, "2")
				checkServes(t, a2, ref, "1")
				d, err := f.device("cam-2")
				if err != nil {
					t.Fatal(err)
				}
				for _, m := range d.Reported.Models {
					if m.Version == "2" {
						t.Fatalf("revoked cam-2 reported demo:2 %s", m.State)
					}
				}
			})
		})
	}
}

// dialMQTT connects and disconnects with a client certificate; it
// returns the refusal.
func dialMQTT(broker, clientID string, tc *tls.Config) error {
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(strings.Replace(broker, "mqtts://", "ssl://", 1)).
		SetClientID(clientID).SetTLSConfig(tc).SetConnectTimeout(5 * time.Second).SetAutoReconnect(false))
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return fmt.Errorf("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return err
	}
	c.Disconnect(0)
	return nil
}

// socketClient calls an agent's local API on its unix socket.
func socketClient(socket string) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", socket)
		}},
	}
}
