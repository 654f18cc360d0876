// Package cptest holds helpers for the control plane's tests: signed model
// uploads and an MQTT client that plays a device. It is imported only by
// tests.
package cptest

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/starling-edge/starling/shared/trust"
	"github.com/starling-edge/starling/shared/wire"
)

// Model is a signed model ready to upload.
type Model struct {
	Meta     trust.ModelMetadata
	Envelope []byte
	Artifact []byte
	Key      *trust.PrivateKey
}

// NewModel makes size random bytes and signs metadata for them with a new
// key; edit adjusts the metadata before signing (nil for none).
func NewModel(tb testing.TB, name, version string, size int, edit func(*trust.ModelMetadata)) Model {
	tb.Helper()
	key, err := trust.GenerateKey()
	if err != nil {
		tb.Fatal(err)
	}
	data := make([]byte, size)
	rand.Read(data)
	md := trust.ModelMetadata{
		Name: name, Version: version, Format: "tflite", Digest: trust.Digest(data), Size: int64(size),
		Created: time.Now().UTC().Truncate(time.Second), Expires: time.Now().Add(24 * time.Hour).UTC().Truncate(time.Second),
	}
	if edit != nil {
		edit(&md)
	}
	env, err := trust.SignModel(md, key)
	if err != nil {
		tb.Fatal(err)
	}
	md.Type = trust.ModelType
	return Model{Meta: md, Envelope: env, Artifact: data, Key: key}
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

// Upload posts m to the API at base ("http://host:port") and returns the
// status and body.
func Upload(tb testing.TB, base string, m Model) (int, []byte) {
	tb.Helper()
	body, ct := Multipart(tb, Part{"metadata", m.Envelope}, Part{"artifact", m.Artifact})
	return Do(tb, "POST", base+"/api/v1/models", ct, body)
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
