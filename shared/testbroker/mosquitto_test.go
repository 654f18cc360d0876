package testbroker

import (
	"io"
	"net"
	"strings"
	"testing"
)

func TestMosquittoListens(t *testing.T) {
	url := Mosquitto(t)
	addr := strings.TrimPrefix(url, "mqtt://")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	// MQTT 3.1.1 CONNECT, client id "t": the broker must answer CONNACK 0.
	connect := []byte{0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 30, 0, 1, 't'}
	if _, err := c.Write(connect); err != nil {
		t.Fatal(err)
	}
	ack := make([]byte, 4)
	if _, err := io.ReadFull(c, ack); err != nil {
		t.Fatal(err)
	}
	if ack[0] != 0x20 || ack[3] != 0 {
		t.Fatalf("CONNACK = %x", ack)
	}
	c.Close()
}
