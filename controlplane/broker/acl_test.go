package broker_test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/starling-edge/starling/controlplane/broker"
	"github.com/starling-edge/starling/controlplane/fleet"
	"github.com/starling-edge/starling/controlplane/internal/cptest"
	"github.com/starling-edge/starling/shared/testbroker"
	"github.com/starling-edge/starling/shared/wire"
)

// fleetBroker is a broker that enforces the fleet's identities.
type fleetBroker struct {
	url   string
	fleet *fleet.Fleet
	pool  *x509.CertPool
}

func checker(f *fleet.Fleet) broker.CertChecker {
	return func(c *x509.Certificate) (broker.Identity, error) {
		id, err := f.CheckCert(c)
		return broker.Identity{ID: id.ID, Control: id.Control}, err
	}
}

// embedded starts the embedded broker on a TLS listener with the fleet hook.
func embedded(t *testing.T) fleetBroker {
	f, err := fleet.Open(fleet.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	cert, err := f.ServerCert()
	if err != nil {
		t.Fatal(err)
	}
	hook := &broker.FleetHook{Check: checker(f)}
	b, err := broker.Start(broker.Options{
		Addr: "127.0.0.1:0",
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert,
			ClientCAs: f.CAPool(), VerifyConnection: f.VerifyConnection, MinVersion: tls.VersionTLS12},
		Auth: hook,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	f.OnRevoke(func(id string) { hook.Kick(id) })
	return fleetBroker{url: b.URL(), fleet: f, pool: f.CAPool()}
}

// mosquitto starts a real Mosquitto with the configuration the control
// plane generates.
func mosquitto(t *testing.T) fleetBroker {
	f, err := fleet.Open(fleet.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", testbroker.FreePort(t))
	if err := f.WriteMosquittoConfig(fleet.MosquittoOptions{Dir: dir, Listen: addr}); err != nil {
		t.Fatal(err)
	}
	testbroker.MosquittoFile(t, filepath.Join(dir, fleet.MosquittoConf), addr)
	f.OnRevoke(func(string) {
		if err := f.SyncMosquitto(dir, true); err != nil {
			t.Errorf("sync mosquitto: %v", err)
		}
	})
	return fleetBroker{url: "mqtts://" + addr, fleet: f, pool: f.CAPool()}
}

var brokers = []struct {
	name  string
	start func(*testing.T) fleetBroker
}{
	{"embedded", embedded},
	{"mosquitto", mosquitto},
}

// inbox collects the messages of one subscription callback.
type inbox struct {
	mu   sync.Mutex
	msgs []string
	ch   chan string
}

func newInbox() *inbox { return &inbox{ch: make(chan string, 256)} }

func (b *inbox) handler(_ paho.Client, m paho.Message) {
	s := m.Topic() + " " + string(m.Payload())
	b.mu.Lock()
	b.msgs = append(b.msgs, s)
	b.mu.Unlock()
	b.ch <- s
}

// waitFor reads messages until want arrives and returns all read before it.
func (b *inbox) waitFor(t *testing.T, want string) []string {
	t.Helper()
	var before []string
	deadline := time.After(10 * time.Second)
	for {
		select {
		case s := <-b.ch:
			if s == want {
				return before
			}
			before = append(before, s)
		case <-deadline:
			t.Fatalf("%q not received within 10s (got %q)", want, before)
		}
	}
}

func publish(t *testing.T, c paho.Client, topic, payload string, retained bool) {
	t.Helper()
	tok := c.Publish(topic, 1, retained, payload)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// subscribe returns the granted QoS (0x80 is a refusal).
func subscribe(t *testing.T, c paho.Client, filter string, h paho.MessageHandler) byte {
	t.Helper()
	tok := c.Subscribe(filter, 1, h)
	if !tok.WaitTimeout(10 * time.Second) {
		t.Fatalf("subscribe %s: no answer", filter)
	}
	if tok.Error() != nil {
		return 0x80
	}
	return tok.(*paho.SubscribeToken).Result()[filter]
}

func TestDeviceConfinedToItsTopics(t *testing.T) {
	for _, bk := range brokers {
		t.Run(bk.name, func(t *testing.T) {
			b := bk.start(t)
			ctl, err := b.fleet.ControlCert()
			if err != nil {
				t.Fatal(err)
			}
			c1, c2 := cptest.Enroll(t, b.fleet, "dev-1"), cptest.Enroll(t, b.fleet, "dev-2")
			control, _, err := cptest.Dial(t, b.url, fleet.ControlIdentity, &ctl, b.pool)
			if err != nil {
				t.Fatalf("control identity refused: %v", err)
			}
			seen := newInbox()
			if q := subscribe(t, control, wire.Prefix+"+/#", seen.handler); q == 0x80 {
				t.Fatal("control identity may not subscribe to every device")
			}
			// The victim's retained desired state is on the broker.
			publish(t, control, wire.DeviceTopic("dev-1", wire.Desired), "secret-1", true)
			seen.waitFor(t, wire.DeviceTopic("dev-1", wire.Desired)+" secret-1")

			dev1, _, err := cptest.Dial(t, b.url, "dev-1", &c1, b.pool)
			if err != nil {
				t.Fatal(err)
			}
			mine := newInbox()
			if q := subscribe(t, dev1, wire.DeviceTopic("dev-1", wire.Desired), mine.handler); q == 0x80 {
				t.Fatal("dev-1 may not subscribe to its own desired state")
			}
			mine.waitFor(t, wire.DeviceTopic("dev-1", wire.Desired)+" secret-1")

			// The attacker: a real, enrolled second device.
			dev2, _, err := cptest.Dial(t, b.url, "dev-2", &c2, b.pool)
			if err != nil {
				t.Fatal(err)
			}
			stolen := newInbox()
			for _, filter := range []string{
				wire.DeviceTopic("dev-1", wire.Desired), wire.Prefix + "dev-1/#", wire.Prefix + "+/desired",
				wire.Prefix + "#", "#", "starling/#", "$SYS/#",
			} {
				q := subscribe(t, dev2, filter, stolen.handler)
				t.Logf("dev-2 subscribe %s: granted 0x%02x", filter, q)
			}
			own := wire.DeviceTopic("dev-2", wire.Desired)
			if q := subscribe(t, dev2, own, stolen.handler); q == 0x80 {
				t.Fatal("dev-2 may not subscribe to its own topic")
			}
			// Fresh messages for dev-1, then a marker for dev-2: whatever
			// dev-2 may read arrives before the marker.
			publish(t, control, wire.DeviceTopic("dev-1", wire.Desired), "secret-2", false)
			publish(t, control, wire.DeviceTopic("dev-1", wire.FetchResp), "chunk", false)
			publish(t, control, own, "marker", false)
			if got := stolen.waitFor(t, own+" marker"); len(got) > 0 {
				t.Fatalf("dev-2 read dev-1's messages: %q", got)
			}
			mine.waitFor(t, wire.DeviceTopic("dev-1", wire.Desired)+" secret-2")

			// dev-2 writes into dev-1's topics; then a marker on its own.
			for _, topic := range []string{
				wire.DeviceTopic("dev-1", wire.Reported), wire.DeviceTopic("dev-1", wire.Status),
				wire.DeviceTopic("dev-1", wire.FetchReq), wire.DeviceTopic("dev-1", wire.Desired), "starling/v1/other",
			} {
				tok := dev2.Publish(topic, 1, false, "forged")
				tok.WaitTimeout(10 * time.Second) // brokers ack or drop; either way nothing may cross
			}
			if !dev2.IsConnectionOpen() { // a broker may also hang up on the attacker
				dev2, _, err = cptest.Dial(t, b.url, "dev-2", &c2, b.pool)
				if err != nil {
					t.Fatal(err)
				}
			}
			publish(t, dev2, wire.DeviceTopic("dev-2", wire.Reported), "marker", false)
			for _, s := range seen.waitFor(t, wire.DeviceTopic("dev-2", wire.Reported)+" marker") {
				if strings.Contains(s, "forged") {
					t.Fatalf("dev-2's forged message crossed: %q", s)
				}
			}
			if got := mine.msgs; len(got) != 2 {
				t.Fatalf("dev-1 received %q; want only its two desired states", got)
			}

			// Claiming dev-1's client id neither takes over nor kicks it.
			if imp, _, err := cptest.Dial(t, b.url, "dev-1", &c2, b.pool); err == nil {
				imp.Disconnect(0)
			}
			publish(t, control, wire.DeviceTopic("dev-1", wire.Desired), "secret-3", false)
			mine.waitFor(t, wire.DeviceTopic("dev-1", wire.Desired)+" secret-3")

			// No certificate, or one from another CA, does not connect.
			if _, _, err := cptest.Dial(t, b.url, "dev-1", nil, b.pool); err == nil {
				t.Fatal("a client without a certificate connected")
			}
			foreign := cptest.ForeignCert(t, "dev-1")
			if _, _, err := cptest.Dial(t, b.url, "dev-1", &foreign, b.pool); err == nil {
				t.Fatal("a certificate from another CA connected")
			}
		})
	}
}

func TestRevokedDeviceCutOffWithin10s(t *testing.T) {
	for _, bk := range brokers {
		t.Run(bk.name, func(t *testing.T) {
			b := bk.start(t)
			ctl, _ := b.fleet.ControlCert()
			c1, c2 := cptest.Enroll(t, b.fleet, "dev-1"), cptest.Enroll(t, b.fleet, "dev-2")
			control, _, err := cptest.Dial(t, b.url, fleet.ControlIdentity, &ctl, b.pool)
			if err != nil {
				t.Fatal(err)
			}
			seen := newInbox()
			subscribe(t, control, wire.Prefix+"+/#", seen.handler)
			dev1, lost, err := cptest.Dial(t, b.url, "dev-1", &c1, b.pool)
			if err != nil {
				t.Fatal(err)
			}
			dev2, _, err := cptest.Dial(t, b.url, "dev-2", &c2, b.pool)
			if err != nil {
				t.Fatal(err)
			}
			mine := newInbox()
			subscribe(t, dev1, wire.DeviceTopic("dev-1", wire.Desired), mine.handler)
			publish(t, dev1, wire.DeviceTopic("dev-1", wire.Reported), "before", false)
			seen.waitFor(t, wire.DeviceTopic("dev-1", wire.Reported)+" before")

			revoked := time.Now()
			if err := b.fleet.Revoke("dev-1"); err != nil {
				t.Fatal(err)
			}
			// A new connection with the revoked certificate is refused
			// within 10 s (the embedded broker at once; Mosquitto once it
			// has reloaded its CRL).
			for {
				c, _, err := cptest.Dial(t, b.url, "dev-1", &c1, b.pool)
				if err != nil {
					break
				}
				c.Disconnect(0)
				if time.Since(revoked) > 10*time.Second {
					t.Fatal("revoked certificate still connects after 10s")
				}
				time.Sleep(100 * time.Millisecond)
			}
			// The open connection is cut off: closed, or nothing it sends
			// or should receive crosses any more.
			select {
			case <-lost:
			default:
				if bk.name == "embedded" {
					select {
					case <-lost:
					case <-time.After(10*time.Second - time.Since(revoked)):
						t.Fatal("embedded broker kept the revoked device connected")
					}
				}
			}
			if dev1.IsConnectionOpen() {
				tok := dev1.Publish(wire.DeviceTopic("dev-1", wire.Reported), 1, false, "after")
				tok.WaitTimeout(10 * time.Second)
			}
			publish(t, control, wire.DeviceTopic("dev-1", wire.Desired), "after-revoke", false)
			publish(t, dev2, wire.DeviceTopic("dev-2", wire.Reported), "marker", false)
			for _, s := range seen.waitFor(t, wire.DeviceTopic("dev-2", wire.Reported)+" marker") {
				if strings.Contains(s, "after") && strings.HasPrefix(s, wire.DeviceTopic("dev-1", wire.Reported)) {
					t.Fatalf("revoked device's publish crossed: %q", s)
				}
			}
			if dev1.IsConnectionOpen() {
				// A round trip on dev-1's own connection: any delivery
				// queued for it arrives before its ack.
				dev1.Publish(wire.DeviceTopic("dev-1", wire.Reported), 1, false, "ping").WaitTimeout(10 * time.Second)
			}
			mine.mu.Lock()
			defer mine.mu.Unlock()
			for _, s := range mine.msgs {
				if strings.Contains(s, "after-revoke") {
					t.Fatalf("revoked device still receives: %q", s)
				}
			}
			if time.Since(revoked) > 10*time.Second {
				t.Fatalf("cut-off took %s", time.Since(revoked))
			}
		})
	}
}

// The insecure development listener is a separate, opt-in listener.
func TestInsecureListenerIsSeparate(t *testing.T) {
	b, err := broker.Start(broker.Options{Addr: "127.0.0.1:0", InsecureAddr: "127.0.0.1:0", Auth: &broker.FleetHook{}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if !strings.HasPrefix(b.InsecureURL(), "mqtt://127.0.0.1:") {
		t.Fatalf("InsecureURL = %q", b.InsecureURL())
	}
	dev := cptest.Connect(t, b.InsecureURL(), "dev-1")
	dev.Publish(wire.Reported, false, []byte("{}"))
	// The main listener without TLS config still refuses clients without a certificate.
	_, port, _ := net.SplitHostPort(b.Addr())
	o := paho.NewClientOptions().AddBroker("tcp://127.0.0.1:" + port).SetClientID("dev-1").SetConnectRetry(false)
	c := paho.NewClient(o)
	if tok := c.Connect(); tok.WaitTimeout(10*time.Second) && tok.Error() == nil {
		t.Fatal("a client without a certificate connected to the authenticated listener")
	}
}
