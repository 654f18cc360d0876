package e2e

import (
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/starling-edge/starling/controlplane"
	"github.com/starling-edge/starling/controlplane/link"
	"github.com/starling-edge/starling/shared/trust"
	"github.com/starling-edge/starling/shared/trust/tuf"
	"github.com/starling-edge/starling/shared/wire"
)

// attackTimestampExpiry is the control plane's timestamp lifetime in the
// attack catalogue: short, so that a frozen timestamp goes stale within
// the test. The control plane re-signs at half-life, so an honest device
// never sees an expired one.
const attackTimestampExpiry = 4 * time.Second

// mitm plays a compromised control plane, or a hostile network between it
// and the device: a file set here replaces the repository's answer for
// that metadata file name (controlplane.Options.MetadataHook).
type mitm struct {
	mu    sync.Mutex
	files map[string][]byte
}

func (m *mitm) hook(_, name string) ([]byte, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.files[name]
	return b, ok
}

func (m *mitm) set(name string, data []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.files == nil {
		m.files = map[string][]byte{}
	}
	m.files[name] = data
}

func (m *mitm) clear() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.files = nil
}

// meta returns a metadata file as the control plane's repository serves it.
func (f *fleet) meta(t *testing.T, name string) []byte {
	t.Helper()
	resp, err := f.get("/api/v1/tuf/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %v %s", name, resp.StatusCode, err, b)
	}
	return b
}

// repoVersions reads the repository's current timestamp and the snapshot
// and targets versions it names.
func (f *fleet) repoVersions(t *testing.T) (ts *metadata.Metadata[metadata.TimestampType], snapshot, targets int64) {
	t.Helper()
	ts, err := tuf.ParseTimestamp(f.meta(t, "timestamp.json"))
	if err != nil {
		t.Fatal(err)
	}
	snapshot = ts.Signed.Meta["snapshot.json"].Version
	snap, err := tuf.ParseSnapshot(f.meta(t, fmt.Sprintf("%d.snapshot.json", snapshot)))
	if err != nil {
		t.Fatal(err)
	}
	return ts, snapshot, snap.Signed.Meta["targets.json"].Version
}

// currentTargets parses the targets version the repository names now.
func (f *fleet) currentTargets(t *testing.T) *metadata.Metadata[metadata.TargetsType] {
	t.Helper()
	_, _, v := f.repoVersions(t)
	md, err := tuf.ParseTargets(f.meta(t, fmt.Sprintf("%d.targets.json", v)))
	if err != nil {
		t.Fatal(err)
	}
	return md
}

func readKey(t *testing.T, path string) *trust.PrivateKey {
	t.Helper()
	k, err := trust.ReadPrivateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newKey(t *testing.T) *trust.PrivateKey {
	t.Helper()
	k, err := trust.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func sign[T metadata.Roles](t *testing.T, md *metadata.Metadata[T], keys ...*trust.PrivateKey) []byte {
	t.Helper()
	b, err := tuf.Sign(md, keys...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// evil is an artifact the operator never signed.
var evil = []byte("an artifact the operator never signed")

// retarget points demo:version in md at the evil artifact.
func retarget(t *testing.T, md *metadata.Metadata[metadata.TargetsType], version string) {
	t.Helper()
	err := tuf.SetTarget(md, tuf.ModelPath("demo", version, ""), int64(len(evil)), trust.Digest(evil),
		tuf.Custom{Kind: tuf.KindModel, Name: "demo", Version: version, Format: "tflite"})
	if err != nil {
		t.Fatal(err)
	}
}

// resync has the device refresh its trusted metadata from the honest
// repository (the desired state is demo:1 again) and waits until it has
// applied that desired state.
func (f *fleet) resync(t *testing.T, id string) {
	t.Helper()
	f.assign(id, "1")
	var want int64
	waitFor(t, id+" resynced", func() (bool, string) {
		var d struct {
			Desired  wire.DesiredState  `json:"desired"`
			Reported wire.ReportedState `json:"reported"`
		}
		resp, err := f.get("/api/v1/devices/" + id)
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
			return false, err.Error()
		}
		if want == 0 {
			want = d.Desired.Generation
		}
		return d.Reported.Generation == want, fmt.Sprintf("desired generation %d, reported %d", want, d.Reported.Generation)
	})
}

// publishDesired sends a desired state to the device as a compromised
// control plane would: straight onto its retained desired topic.
func (f *fleet) publishDesired(t *testing.T, id string, ds wire.DesiredState) {
	t.Helper()
	server, err := link.PahoServer(f.agentBroker())
	if err != nil {
		t.Fatal(err)
	}
	c := mqtt.NewClient(mqtt.NewClientOptions().AddBroker(server).SetClientID("attacker-" + id).SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("attacker connect to %s: %v", server, tok.Error())
	}
	defer c.Disconnect(100)
	b, err := json.Marshal(ds)
	if err != nil {
		t.Fatal(err)
	}
	if tok := c.Publish(wire.DeviceTopic(id, wire.Desired), 1, true, b); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("attacker publish: %v", tok.Error())
	}
}

// attackKit is what the attacks use: the fleet, the man in the middle,
// the control plane's online keys (as a thief of its data directory has
// them) and the operator's root and targets public keys.
type attackKit struct {
	f                 *fleet
	m                 *mitm
	snapKey, tsKey    *trust.PrivateKey
	rootKey           *trust.PrivateKey // the operator's; only to build a root that misses its own threshold
	targetsPub        ed25519.PublicKey
	rootVersion       int64
	deviceID, control string
}

// TestAttackCatalogue mounts one attack per TUF attack class against a
// device that serves demo:1, over the embedded broker and over
// Mosquitto. Each case asserts the exact rejection (the reported model
// state and the model.rejected event name the check, and the error says
// why) and that the device still serves demo:1 with the official
// interpreter's outputs. The cases share one fleet per broker; each starts
// from a device resynced with the honest repository; the two brokers run
// in parallel. The stolen-online-keys
// case runs last: a thief can freeze a device (it then trusts the thief's
// timestamp and snapshot versions), which is what it leaves behind.
func TestAttackCatalogue(t *testing.T) {
	for name, broker := range brokers(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel() // mostly waiting for metadata to go stale
			m := &mitm{}
			f := newFleet(t, broker(t), func(o *controlplane.Options) {
				o.MetadataHook = m.hook
				o.TimestampExpiry = attackTimestampExpiry
			})
			ref := loadReference(t)
			const id = "cam-a"
			a := f.startAgent(id, filepath.Join(f.dir, "agent"))
			f.waitOnline(id)
			f.push("1")
			f.assign(id, "1")
			f.waitModelState(id, "1", wire.StateActive)
			checkServes(t, a, ref, "1")

			control := filepath.Join(f.dir, "control")
			root, err := tuf.ParseRoot(mustRead(t, filepath.Join(f.keys, "root.json")))
			if err != nil {
				t.Fatal(err)
			}
			targetsKey := readKey(t, filepath.Join(f.keys, "targets.key"))
			k := &attackKit{f: f, m: m, deviceID: id, control: control,
				snapKey:     readKey(t, filepath.Join(control, "tuf", "keys", "snapshot.key")),
				tsKey:       readKey(t, filepath.Join(control, "tuf", "keys", "timestamp.key")),
				rootKey:     readKey(t, filepath.Join(f.keys, "root.key")),
				targetsPub:  targetsKey.Public(),
				rootVersion: root.Signed.Version,
			}

			for i, tc := range attacks {
				version := fmt.Sprint(10 + i)
				t.Run(tc.name, func(t *testing.T) {
					defer func(parent *testing.T) { f.t = parent }(f.t)
					f.t = t // the fleet's helpers fail this case, not the broker's test
					defer m.clear()
					f.resync(t, id)
					checkServes(t, a, ref, "1")
					for _, step := range tc.steps(t, k, version) {
						wantRejected(t, k, step)
						waitEvent(t, f, id, step.version, step.check)
						checkServes(t, a, ref, "1")
					}
				})
			}
		})
	}
}

// rejection is what one attack step must end in: demo:version rejected by
// the named check, the error containing why.
type rejection struct {
	version, check, why string
}

var attacks = []struct {
	name string
	// steps mounts the attack, desires the attacked version(s) and says
	// how each must be rejected.
	steps func(t *testing.T, k *attackKit, version string) []rejection
}{
	{"rollback: the network replays an older timestamp", func(t *testing.T, k *attackKit, version string) []rejection {
		old := k.f.meta(t, "timestamp.json")
		k.f.push(version)
		k.f.resync(t, k.deviceID) // the device now trusts a newer timestamp
		k.m.set("timestamp.json", old)
		k.f.assign(k.deviceID, version)
		return []rejection{{version, "rollback", "older than trusted version"}}
	}},
	{"freeze: the network serves the same timestamp until it is stale", func(t *testing.T, k *attackKit, version string) []rejection {
		frozen := k.f.meta(t, "timestamp.json")
		k.m.set("timestamp.json", frozen)
		k.f.push(version) // the device never hears of it
		ts, err := tuf.ParseTimestamp(frozen)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Until(ts.Signed.Expires) + 100*time.Millisecond)
		k.f.assign(k.deviceID, version)
		return []rejection{{version, "freeze", "expired at"}}
	}},
	{"mix-and-match: the previous targets served as the version snapshot names", func(t *testing.T, k *attackKit, version string) []rejection {
		k.f.push(version)
		_, _, n := k.f.repoVersions(t)
		k.m.set(fmt.Sprintf("%d.targets.json", n), k.f.meta(t, fmt.Sprintf("%d.targets.json", n-1)))
		k.f.assign(k.deviceID, version)
		return []rejection{{version, "mix-and-match", "is not the targets version"}}
	}},
	{"wrong threshold: a new root signed by one of the two root keys it requires", func(t *testing.T, k *attackKit, version string) []rejection {
		k.f.push(version)
		md, err := tuf.NewRoot(tuf.RootSpec{Version: k.rootVersion + 1,
			Root: []ed25519.PublicKey{k.rootKey.Public(), newKey(t).Public()}, RootThreshold: 2,
			Targets: []ed25519.PublicKey{k.targetsPub}, Snapshot: []ed25519.PublicKey{k.snapKey.Public()},
			Timestamp: []ed25519.PublicKey{k.tsKey.Public()}})
		if err != nil {
			t.Fatal(err)
		}
		k.m.set(fmt.Sprintf("%d.root.json", k.rootVersion+1), sign(t, md, k.rootKey))
		k.f.assign(k.deviceID, version)
		return []rejection{{version, "threshold", "requires 2"}}
	}},
	{"expired metadata: targets whose signature lapsed", func(t *testing.T, k *attackKit, version string) []rejection {
		k.f.push(version, "--expires", "3s")
		time.Sleep(time.Until(k.f.currentTargets(t).Signed.Expires) + 100*time.Millisecond)
		k.f.assign(k.deviceID, version)
		return []rejection{{version, "expiry", "expired at"}}
	}},
	{"unknown key: targets re-signed by a key root does not name", func(t *testing.T, k *attackKit, version string) []rejection {
		k.f.push(version)
		md := k.f.currentTargets(t)
		retarget(t, md, version)
		k.m.set(fmt.Sprintf("%d.targets.json", md.Signed.Version), sign(t, md, newKey(t)))
		k.f.assign(k.deviceID, version)
		return []rejection{{version, "unknown-key", "does not trust for targets"}}
	}},
	{"arbitrary artifact: stored bytes differ from the signed ones", func(t *testing.T, k *attackKit, version string) []rejection {
		k.f.push(version)
		corruptArtifact(t, k.control)
		k.f.assign(k.deviceID, version)
		return []rejection{{version, "digest", "sha256"}}
	}},
	{"arbitrary artifact: a desired model the operator never signed", func(t *testing.T, k *attackKit, version string) []rejection {
		// Straight onto the device's desired topic, with metadata the
		// device must ignore; demo:version was never pushed.
		md, err := json.Marshal(map[string]any{"name": "demo", "version": version, "digest": trust.Digest(evil), "size": len(evil)})
		if err != nil {
			t.Fatal(err)
		}
		k.f.publishDesired(t, k.deviceID, wire.DesiredState{Generation: 1 << 40, Updated: time.Now().UTC(),
			Models: []wire.DesiredModel{{Name: "demo", Version: version, Metadata: md}}})
		return []rejection{{version, "unknown-target", "signs no target"}}
	}},
	{"stolen online keys: new timestamp and snapshot over targets the operator did not sign", func(t *testing.T, k *attackKit, version string) []rejection {
		// The thief holds the control plane's snapshot and timestamp keys
		// (read from its data directory) but not the operator's offline
		// targets key. First: targets signed with the stolen keys.
		k.f.push(version)
		second := version + "1"
		k.f.push(second)
		ts, snapV, targetsV := k.f.repoVersions(t)
		forge := func(tsV, snapV int64, targets []byte) {
			exp := time.Now().Add(time.Hour)
			k.m.set(fmt.Sprintf("%d.targets.json", targetsV+1), targets)
			k.m.set(fmt.Sprintf("%d.snapshot.json", snapV), sign(t, tuf.NewSnapshot(snapV, exp, targetsV+1), k.snapKey))
			k.m.set("timestamp.json", sign(t, tuf.NewTimestamp(tsV, exp, snapV), k.tsKey))
		}
		// The thief signs versions far ahead of the control plane's.
		const ahead = 1000
		md := k.f.currentTargets(t)
		md.Signed.Version = targetsV + 1
		retarget(t, md, version)
		forge(ts.Signed.Version+ahead, snapV+ahead, sign(t, md, k.snapKey, k.tsKey))
		k.f.assign(k.deviceID, version)
		first := rejection{version, "unknown-key", "does not trust for targets"}
		wantRejected(t, k, first)

		// Then: the operator's signature kept over targets the thief
		// edited to point the second version at its artifact.
		md = k.f.currentTargets(t)
		md.Signed.Version = targetsV + 1
		retarget(t, md, second)
		edited, err := md.ToBytes(false)
		if err != nil {
			t.Fatal(err)
		}
		forge(ts.Signed.Version+ahead+1, snapV+ahead+1, edited)
		k.f.assign(k.deviceID, second)
		sig := rejection{second, "signature", "does not verify"}
		wantRejected(t, k, sig)

		// What the thief leaves behind: the device trusts its timestamp
		// and snapshot versions, so it refuses the control plane's lower
		// ones, and with them the operator's next good version, until a
		// root rotation replaces the online keys.
		k.m.clear()
		third := version + "2"
		k.f.push(third)
		k.f.assign(k.deviceID, third)
		return []rejection{first, sig, {third, "rollback", "older than trusted version"}}
	}},
}

// wantRejected waits for one rejection in the middle of an attack.
func wantRejected(t *testing.T, k *attackKit, r rejection) {
	t.Helper()
	st := k.f.waitModelState(k.deviceID, r.version, wire.StateRejected)
	if st.Check != r.check || !strings.Contains(st.Error, r.why) {
		t.Fatalf("demo:%s rejected with check %q (%s); want check %q with %q", r.version, st.Check, st.Error, r.check, r.why)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
