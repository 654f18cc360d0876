// Package cptest holds helpers for the control plane's tests: model pushes
// signed with an operator's TUF keys and an MQTT client that plays a device. It is imported only by
// tests.
package cptest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/starling-edge/starling/shared/trust"
	"github.com/starling-edge/starling/shared/trust/tuf"
	"github.com/starling-edge/starling/shared/wire"
)

// Model is a model version ready to push: its artifact and the fields its
// target will carry.
type Model struct {
	Meta     trust.ModelMetadata
	Artifact []byte
}

// Path is the model's TUF target path.
func (m Model) Path() string { return tuf.ModelPath(m.Meta.Name, m.Meta.Version, "") }

// NewModel makes size random bytes and the metadata for them; edit adjusts
// the metadata (nil for none).
func NewModel(tb testing.TB, name, version string, size int, edit func(*trust.ModelMetadata)) Model {
	tb.Helper()
	data := make([]byte, size)
	rand.Read(data)
	md := trust.ModelMetadata{
		Type: trust.ModelType, Name: name, Version: version, Format: "tflite", Digest: trust.Digest(data), Size: int64(size),
		Created: time.Now().UTC().Truncate(time.Second), Expires: time.Now().Add(24 * time.Hour).UTC().Truncate(time.Second),
	}
	if edit != nil {
		edit(&md)
	}
	return Model{Meta: md, Artifact: data}
}

// Repo is an operator's offline root and targets keys for one control
// plane, and the targets it has signed, as starlingctl keeps them.
type Repo struct {
	Base          string
	Root, Targets *trust.PrivateKey
	RootJSON      []byte // version 1
	mu            sync.Mutex
	version       int64
	held          map[string]Model
}

var repos sync.Map // base URL -> *Repo

// RepoFor returns the operator keys for the control plane at base,
// initialising its repository (root version 1 with the control plane's
// online keys, empty targets version 1) on first use.
func RepoFor(tb testing.TB, base string) *Repo {
	tb.Helper()
	if r, ok := repos.Load(base); ok {
		return r.(*Repo)
	}
	r := &Repo{Base: base, held: map[string]Model{}}
	var err error
	if r.Root, err = trust.GenerateKey(); err != nil {
		tb.Fatal(err)
	}
	if r.Targets, err = trust.GenerateKey(); err != nil {
		tb.Fatal(err)
	}
	code, body := Do(tb, "GET", base+"/api/v1/trust/online-keys", "", nil)
	var keys map[string]struct {
		Public string `json:"public"`
	}
	if code != 200 || json.Unmarshal(body, &keys) != nil {
		tb.Fatalf("online keys = %d %s", code, body)
	}
	pub := func(role string) []ed25519.PublicKey {
		b, err := hex.DecodeString(keys[role].Public)
		if err != nil {
			tb.Fatal(err)
		}
		return []ed25519.PublicKey{b}
	}
	md, err := tuf.NewRoot(tuf.RootSpec{Root: []ed25519.PublicKey{r.Root.Public()}, Targets: []ed25519.PublicKey{r.Targets.Public()},
		Snapshot: pub(tuf.RoleSnapshot), Timestamp: pub(tuf.RoleTimestamp)})
	if err != nil {
		tb.Fatal(err)
	}
	if r.RootJSON, err = tuf.Sign(md, r.Root); err != nil {
		tb.Fatal(err)
	}
	if code, body := Do(tb, "POST", base+"/api/v1/trust/root", "application/json", bytes.NewReader(r.RootJSON)); code != 201 {
		tb.Fatalf("POST root = %d %s", code, body)
	}
	if code, body := Do(tb, "POST", base+"/api/v1/trust/targets", "application/json", bytes.NewReader(r.Next(tb, nil))); code != 201 {
		tb.Fatalf("POST targets = %d %s", code, body)
	}
	r.Commit()
	repos.Store(base, r)
	return r
}

// Next returns the next targets version naming every held model and ms,
// signed with the targets key unless keys are given. It changes nothing
// until Commit.
func (r *Repo) Next(tb testing.TB, keys []*trust.PrivateKey, ms ...Model) []byte {
	tb.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	expires := time.Now().Add(24 * time.Hour)
	md := tuf.NewTargets(r.version+1, expires)
	all := append([]Model{}, ms...)
	for _, m := range r.held {
		all = append(all, m)
	}
	for _, m := range all {
		if m.Meta.Expires.Before(expires) {
			md.Signed.Expires = m.Meta.Expires.UTC().Truncate(time.Second)
		}
		if _, dup := md.Signed.Targets[m.Path()]; dup {
			continue // ms come first and win
		}
		if err := tuf.SetTarget(md, m.Path(), m.Meta.Size, m.Meta.Digest, tuf.Custom{Kind: tuf.KindModel,
			Name: m.Meta.Name, Version: m.Meta.Version, Format: m.Meta.Format}); err != nil {
			tb.Fatal(err)
		}
	}
	if keys == nil {
		keys = []*trust.PrivateKey{r.Targets}
	}
	b, err := tuf.Sign(md, keys...)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// Commit records that the last Next was stored by the control plane.
func (r *Repo) Commit(ms ...Model) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.version++
	for _, m := range ms {
		r.held[m.Path()] = m
	}
}

// Part is one multipart part.
type Part struct {
	Name string
	Data []byte
}

// Multipart encodes parts as multipart/form-data and returns the body and
// its content type.
func Multipart(tb testing.TB, parts ...Part) (io.Reader, string) {
	tb.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, p := range parts {
		var w io.Writer
		var err error
		if p.Name == "artifact" {
			w, err = mw.CreateFormFile(p.Name, "model.tflite")
		} else {
			w, err = mw.CreateFormField(p.Name)
		}
		if err != nil {
			tb.Fatal(err)
		}
		w.Write(p.Data)
	}
	mw.Close()
	return &buf, mw.FormDataContentType()
}

// Upload pushes m to the API at base ("http://host:port") as starlingctl
// model push does (next targets version naming m, target path, artifact)
// and returns the status and body.
func Upload(tb testing.TB, base string, m Model) (int, []byte) {
	tb.Helper()
	r := RepoFor(tb, base)
	body, ct := Multipart(tb, Part{"targets", r.Next(tb, nil, m)}, Part{"target", []byte(m.Path())}, Part{"artifact", m.Artifact})
	code, resp := Do(tb, "POST", base+"/api/v1/models", ct, body)
	if code/100 == 2 {
		r.Commit(m)
	}
	return code, resp
}

// Do sends one request and returns the status and body.
func Do(tb testing.TB, method, url, contentType string, body io.Reader) (int, []byte) {
	tb.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		tb.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if tok := tokenFor(url); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return resp.StatusCode, b
}

// clientSeq keeps client ids unique when a test connects one device twice.
var clientSeq atomic.Int64

// Device is a paho client playing an agent.
type Device struct {
	ID     string
	Client paho.Client
	tb     testing.TB
}

// Connect connects a device client to brokerURL ("mqtt://host:port") with
// an "offline" last will, like the agent.
func Connect(tb testing.TB, brokerURL, id string) *Device {
	tb.Helper()
	o := paho.NewClientOptions().
		AddBroker("tcp://"+brokerURL[len("mqtt://"):]).
		SetClientID(fmt.Sprintf("test-%s-%d", id, clientSeq.Add(1))).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetWill(wire.DeviceTopic(id, wire.Status), wire.Offline, 1, true)
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		tb.Fatalf("device %s connect: %v", id, tok.Error())
	}
	tb.Cleanup(func() { c.Disconnect(50) })
	return &Device{ID: id, Client: c, tb: tb}
}

// Publish publishes on one of the device's topics and waits for the ack.
func (d *Device) Publish(name string, retained bool, payload []byte) {
	d.tb.Helper()
	tok := d.Client.Publish(wire.DeviceTopic(d.ID, name), 1, retained, payload)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		d.tb.Fatalf("device %s publish %s: %v", d.ID, name, tok.Error())
	}
}

// Subscribe subscribes to one of the device's topics; messages go to a
// buffered channel.
func (d *Device) Subscribe(name string) <-chan paho.Message {
	d.tb.Helper()
	ch := make(chan paho.Message, 64)
	tok := d.Client.Subscribe(wire.DeviceTopic(d.ID, name), 1, func(_ paho.Client, m paho.Message) { ch <- m })
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		d.tb.Fatalf("device %s subscribe %s: %v", d.ID, name, tok.Error())
	}
	return ch
}

// Receive waits for a message on ch; it fails the test after 10s so a lost
// message does not hang the suite (a deadline, not a timing assertion).
func Receive(tb testing.TB, ch <-chan paho.Message, what string) paho.Message {
	tb.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(10 * time.Second):
		tb.Fatalf("no %s received within 10s", what)
		return nil
	}
}

// Eventually polls cond until it holds, failing after 10s with what.
func Eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("gave up waiting: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
