package wire

import (
	"bytes"
	"errors"
	"testing"
)

func TestChunkRoundTrip(t *testing.T) {
	h := ChunkHeader{ID: "r1", Digest: "sha256:00", Offset: 42, Total: 100}
	data := []byte{1, 2, 3, 0, 255}
	msg, err := EncodeChunk(h, data)
	if err != nil {
		t.Fatal(err)
	}
	h2, d2, err := DecodeChunk(msg)
	if err != nil {
		t.Fatal(err)
	}
	if h2 != h || !bytes.Equal(d2, data) {
		t.Fatalf("got %+v %v", h2, d2)
	}
}

func TestDecodeChunkMalformed(t *testing.T) {
	for _, msg := range [][]byte{nil, {0, 0}, {0, 0, 0, 9, '{'}, {0, 0, 0, 1, '{'}, {0xff, 0xff, 0xff, 0xff}} {
		if _, _, err := DecodeChunk(msg); !errors.Is(err, ErrFrame) {
			t.Errorf("DecodeChunk(%v) = %v, want ErrFrame", msg, err)
		}
	}
}

func TestTopics(t *testing.T) {
	topic := DeviceTopic("cam-1", FetchResp)
	id, name, ok := ParseDeviceTopic(topic)
	if !ok || id != "cam-1" || name != FetchResp {
		t.Fatalf("ParseDeviceTopic(%q) = %q %q %v", topic, id, name, ok)
	}
	for _, bad := range []string{"other/topic", Prefix, Prefix + "x", Prefix + "/desired"} {
		if _, _, ok := ParseDeviceTopic(bad); ok {
			t.Errorf("ParseDeviceTopic(%q) accepted", bad)
		}
	}
}

func TestValidDeviceID(t *testing.T) {
	for id, want := range map[string]bool{
		"cam-1": true, "gw_2.site": true, "": false, ".hidden": false, "a/b": false, "a+b": false, "a#": false,
		string(make([]byte, 65)): false,
	} {
		if got := ValidDeviceID(id); got != want {
			t.Errorf("ValidDeviceID(%q) = %v", id, got)
		}
	}
}
