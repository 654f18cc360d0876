package broker_test

import (
	"strings"
	"testing"

	"github.com/starling-edge/starling/controlplane/broker"
	"github.com/starling-edge/starling/controlplane/internal/cptest"
	"github.com/starling-edge/starling/shared/wire"
)

func TestRetainedDelivery(t *testing.T) {
	b, err := broker.Start(broker.Options{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasSuffix(b.Addr(), ":0") || !strings.HasPrefix(b.URL(), "mqtt://127.0.0.1:") {
		t.Fatalf("Addr = %s, URL = %s; want the bound port", b.Addr(), b.URL())
	}
	pub := cptest.Connect(t, b.URL(), "dev-1")
	pub.Publish(wire.Desired, true, []byte(`{"generation":1}`))
	sub := cptest.Connect(t, b.URL(), "dev-1")
	if got := cptest.Receive(t, sub.Subscribe(wire.Desired), "retained message").Payload(); string(got) != `{"generation":1}` {
		t.Fatalf("retained payload = %s", got)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := broker.Start(broker.Options{Addr: "127.0.0.1:bad"}); err == nil {
		t.Fatal("Start on a bad address succeeded")
	}
}
