// Package wire defines the MQTT topics and message bodies shared by the agent
// and the control plane. Every device-scoped topic lives under
// starling/v1/dev/{id}/ so that a broker ACL can confine a device to its own
// subtree. All bodies are JSON except FetchResponse, which is a JSON header
// followed by raw chunk bytes (see EncodeChunk).
package wire

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Prefix is the root of every Starling topic.
const Prefix = "starling/v1/dev/"

// Topic names under a device's subtree.
const (
	// Desired: control plane -> agent, retained, QoS 1. Body: DesiredState.
	Desired = "desired"
	// Reported: agent -> control plane, retained, QoS 1. Body: ReportedState.
	Reported = "reported"
	// Status: agent -> control plane, retained "online"/"offline"; "offline"
	// is the agent's last will.
	Status = "status"
	// Events: agent -> control plane, QoS 1. Body: Event (rejections, errors).
	Events = "events"
	// FetchReq: agent -> control plane, QoS 1. Body: FetchRequest.
	FetchReq = "fetch/req"
	// FetchResp: control plane -> agent, QoS 1. Body: EncodeChunk.
	FetchResp = "fetch/resp"
	// MetaReq: agent -> control plane, QoS 1. Body: MetadataRequest for
	// one TUF metadata file.
	MetaReq = "meta/req"
	// MetaResp: control plane -> agent, QoS 1. Body: MetadataResponse.
	MetaResp = "meta/resp"
)

// Status payloads.
const (
	Online  = "online"
	Offline = "offline"
)

// DeviceTopic returns the topic for a device and one of the names above.
func DeviceTopic(deviceID, name string) string { return Prefix + deviceID + "/" + name }

// ParseDeviceTopic splits "starling/v1/dev/{id}/{name}" into id and name.
func ParseDeviceTopic(topic string) (deviceID, name string, ok bool) {
	rest, found := strings.CutPrefix(topic, Prefix)
	if !found {
		return "", "", false
	}
	deviceID, name, found = strings.Cut(rest, "/")
	if !found || deviceID == "" || name == "" {
		return "", "", false
	}
	return deviceID, name, true
}

// ValidDeviceID reports whether id is usable as a topic level and file name:
// 1-64 characters of [A-Za-z0-9._-], not starting with a dot.
func ValidDeviceID(id string) bool {
	if len(id) == 0 || len(id) > 64 || id[0] == '.' {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// DesiredModel is one model version a device should serve. The agent looks
// it up in its TUF targets metadata (target models/<name>/<version>[/<variant>])
// and verifies it there before fetching anything. Metadata is informational
// (the target entry as the operator signed it); the agent never trusts it.
type DesiredModel struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	// Variant selects one of the version's artifacts; "" is the default.
	Variant  string          `json:"variant,omitempty"`
	Metadata json.RawMessage `json:"metadata,omitempty"`
}

// DesiredState is everything a device should be running. Generation grows
// with every change the control plane makes, so a reported state can say
// which desired state it has reached.
type DesiredState struct {
	Generation int64          `json:"generation"`
	Models     []DesiredModel `json:"models"`
	Updated    time.Time      `json:"updated"`
}

// Model states in the agent's cache and in reports.
const (
	StateFetching = "fetching"
	StateVerified = "verified"
	StateActive   = "active"
	StatePrevious = "previous"
	StateRetired  = "retired"
	StateRejected = "rejected"
	StateFailed   = "failed"
)

// ModelStatus is one model version's state on a device.
type ModelStatus struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	State   string `json:"state"`
	Digest  string `json:"digest,omitempty"`
	// Fetched/Size give download progress while State is "fetching".
	Fetched int64 `json:"fetched,omitempty"`
	Size    int64 `json:"size,omitempty"`
	// Check names the failed check ("signature", "digest", "expiry", ...)
	// when State is "rejected"; Error says what happened.
	Check string `json:"check,omitempty"`
	Error string `json:"error,omitempty"`
}

// ReportedState is what a device says it runs. It is retained, so the
// control plane learns the latest state of every device when it starts.
type ReportedState struct {
	DeviceID     string        `json:"device_id"`
	AgentVersion string        `json:"agent_version"`
	OS           string        `json:"os"`
	Arch         string        `json:"arch"`
	Engines      []string      `json:"engines"`
	Generation   int64         `json:"generation"` // last desired generation applied
	Models       []ModelStatus `json:"models"`
	Time         time.Time     `json:"time"`
}

// Event kinds.
const (
	EventRejected  = "model.rejected"
	EventActivated = "model.activated"
	EventFailed    = "model.failed"
)

// Event is a one-off report from a device, e.g. a rejected model.
type Event struct {
	Kind    string    `json:"kind"`
	Model   string    `json:"model,omitempty"`
	Version string    `json:"version,omitempty"`
	Check   string    `json:"check,omitempty"`
	Message string    `json:"message"`
	Time    time.Time `json:"time"`
}

// FetchRequest asks for bytes [Offset, Offset+Length) of an artifact.
type FetchRequest struct {
	ID     string `json:"id"`     // echoed in the response
	Digest string `json:"digest"` // "sha256:<hex>"
	Offset int64  `json:"offset"`
	Length int64  `json:"length"`
}

// MetadataRequest asks for one TUF metadata file by name
// ("timestamp.json", "3.root.json", "7.snapshot.json", "12.targets.json").
type MetadataRequest struct {
	ID   string `json:"id"` // echoed in the response
	Name string `json:"name"`
}

// MetadataResponse answers a MetadataRequest: Data holds the file, or
// NotFound says the repository has no such file, or Error says why it
// could not be served.
type MetadataResponse struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Data     []byte `json:"data,omitempty"` // base64 in JSON
	NotFound bool   `json:"not_found,omitempty"`
	Error    string `json:"error,omitempty"`
}

// MaxChunk is the largest chunk a control plane will send in one message.
const MaxChunk = 1 << 20

// ChunkHeader precedes a chunk's bytes in a fetch response.
type ChunkHeader struct {
	ID     string `json:"id"`
	Digest string `json:"digest"`
	Offset int64  `json:"offset"`
	Total  int64  `json:"total"` // artifact size
	Error  string `json:"error,omitempty"`
}

// EncodeChunk frames a fetch response: 4-byte big-endian header length, the
// JSON header, then the data.
func EncodeChunk(h ChunkHeader, data []byte) ([]byte, error) {
	hb, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 4+len(hb)+len(data))
	binary.BigEndian.PutUint32(out, uint32(len(hb)))
	copy(out[4:], hb)
	copy(out[4+len(hb):], data)
	return out, nil
}

// ErrFrame is returned for a fetch response that cannot be decoded.
var ErrFrame = errors.New("wire: malformed chunk frame")

// DecodeChunk reverses EncodeChunk. The returned data aliases msg.
func DecodeChunk(msg []byte) (ChunkHeader, []byte, error) {
	var h ChunkHeader
	if len(msg) < 4 {
		return h, nil, fmt.Errorf("%w: %d bytes", ErrFrame, len(msg))
	}
	n := binary.BigEndian.Uint32(msg)
	if uint64(n) > uint64(len(msg)-4) {
		return h, nil, fmt.Errorf("%w: header length %d exceeds message", ErrFrame, n)
	}
	if err := json.Unmarshal(msg[4:4+n], &h); err != nil {
		return h, nil, fmt.Errorf("%w: header: %v", ErrFrame, err)
	}
	return h, msg[4+n:], nil
}
