package agent

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/starling-edge/starling/agent/enroll"
	"github.com/starling-edge/starling/agent/serve"
	"github.com/starling-edge/starling/agent/tufclient"
	"github.com/starling-edge/starling/agent/uplink"
	"github.com/starling-edge/starling/shared/wire"
)

// Config is the agent's configuration as a file (YAML) and flags give it.
// It is built as Default() -> LoadFile -> flags -> Validate.
type Config struct {
	// DeviceID is optional with a TLS broker: the id is the device
	// certificate's, and a different one here is refused. Required with a
	// plain mqtt:// broker.
	DeviceID     string `yaml:"device_id"`
	Broker       string `yaml:"broker"`       // mqtts://host:port (default mqtts://127.0.0.1:1883); mqtt:// only for development listeners
	Data         string `yaml:"data"`         // cache and state directory; the identity lives in <data>/identity
	Socket       string `yaml:"socket"`       // default <data>/agent.sock
	SocketMode   string `yaml:"socket_mode"`  // octal; default "0660"
	TrustRoot    string `yaml:"trust_root"`   // operator's root.json (TUF), the device's trust anchor
	MetadataURL  string `yaml:"metadata_url"` // optional: read TUF metadata over HTTP(S) from this URL instead of MQTT; with a TLS broker, the device API (https) with the device certificate
	ArtifactURL  string `yaml:"artifact_url"` // optional: download artifacts from this device API (https, device certificate) instead of over MQTT
	TCP          string `yaml:"tcp"`          // optional loopback listener
	ChunkSize    int    `yaml:"chunk_size"`   // bytes; default 256 KiB
	CacheBytes   int64  `yaml:"cache_bytes"`  // 0: no eviction
	MaxBodyBytes int64  `yaml:"max_body_bytes"`

	// Enrollment, needed only until the device holds its certificate:
	// the control plane's device API, a one-time token (inline or in a
	// file), and the fleet CA to pin (a PEM file or its fingerprint).
	EnrollURL       string `yaml:"enroll_url"`        // https://host:port of the device API
	EnrollToken     string `yaml:"enroll_token"`      // from `starlingctl device enroll-token`
	EnrollTokenFile string `yaml:"enroll_token_file"` // file holding the token (preferred: not in ps output)
	CAFile          string `yaml:"ca_file"`           // fleet CA certificate, PEM
	CAFingerprint   string `yaml:"ca_fingerprint"`    // sha256:<hex> as starling-control prints it

	// Serving configures the local API beyond the socket: gRPC listeners,
	// the sockets' group, and per-model batching, queues, allow lists and
	// routes (see docs/local-api.md).
	Serving Serving `yaml:"serving"`
}

// TLS reports whether the broker is reached over TLS with a device
// certificate.
func (c *Config) TLS() bool { return uplink.TLSBroker(c.Broker) }

// IdentityDir is where the device's key, certificate and fleet CA live.
func (c *Config) IdentityDir() string { return filepath.Join(c.Data, "identity") }

// Serving is the "serving" section of the agent's configuration.
type Serving struct {
	GRPCSocket  string                        `yaml:"grpc_socket"`  // default <socket>-grpc.sock
	GRPCTCP     string                        `yaml:"grpc_tcp"`     // optional loopback gRPC listener
	SocketGroup string                        `yaml:"socket_group"` // group name or gid owning the sockets
	Models      map[string]serve.ModelOptions `yaml:"models"`       // per model name
}

// Default returns the configuration before any file or flag.
func Default() Config {
	return Config{
		Broker:       "mqtts://127.0.0.1:1883",
		Data:         "/var/lib/starling",
		SocketMode:   "0660",
		ChunkSize:    256 << 10,
		MaxBodyBytes: 8 << 20,
	}
}

// LoadFile overlays the fields set in a YAML file onto c. Unknown fields
// are an error, so a typo does not silently fall back to a default.
func (c *Config) LoadFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		return fmt.Errorf("config %s: %v: %w", path, err, ErrConfig)
	}
	return nil
}

// Validate checks every field and fills in derived defaults (Socket).
// Errors name the field.
func (c *Config) Validate() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%s: %s: %w", field, fmt.Sprintf(format, args...), ErrConfig)
	}
	if err := uplink.ParseBroker(c.Broker); err != nil {
		return bad("broker", "%v", err)
	}
	switch {
	case c.DeviceID == "" && !c.TLS():
		return bad("device_id", "empty; a plain mqtt:// broker needs it (with mqtts:// it comes from the device certificate)")
	case c.DeviceID != "" && !wire.ValidDeviceID(c.DeviceID):
		return bad("device_id", "%q is not 1-64 characters of [A-Za-z0-9._-] (not starting with a dot)", c.DeviceID)
	}
	if err := c.validateEnrollment(bad); err != nil {
		return err
	}
	if c.Data == "" {
		return bad("data", "empty; set the directory for the cache and state")
	}
	if c.Socket == "" {
		c.Socket = filepath.Join(c.Data, "agent.sock")
	}
	if m, err := strconv.ParseUint(c.SocketMode, 8, 32); err != nil || m > 0o777 || m == 0 {
		return bad("socket_mode", "%q is not an octal permission such as 0660", c.SocketMode)
	}
	if c.TrustRoot == "" {
		return bad("trust_root", "empty; set the operator's root.json (starlingctl keys init writes it)")
	}
	if c.MetadataURL != "" {
		if err := tufclient.CheckURL(c.MetadataURL); err != nil {
			return bad("metadata_url", "%v", err)
		}
		if c.TLS() && !strings.HasPrefix(c.MetadataURL, "https://") {
			return bad("metadata_url", "%q: with a TLS broker, metadata is read from the device API (https://) with the device certificate", c.MetadataURL)
		}
	}
	if c.ArtifactURL != "" {
		if err := enroll.CheckURL(c.ArtifactURL); err != nil {
			return bad("artifact_url", "%v", err)
		}
		if !c.TLS() {
			return bad("artifact_url", "needs the device certificate, so an mqtts:// broker")
		}
	}
	if c.TCP != "" {
		if err := serve.CheckLoopback(c.TCP); err != nil {
			return bad("tcp", "%v", err)
		}
	}
	if c.ChunkSize <= 0 || c.ChunkSize > wire.MaxChunk {
		return bad("chunk_size", "%d is outside 1..%d", c.ChunkSize, wire.MaxChunk)
	}
	if c.CacheBytes < 0 {
		return bad("cache_bytes", "%d is negative", c.CacheBytes)
	}
	if c.Serving.GRPCTCP != "" {
		if err := serve.CheckLoopback(c.Serving.GRPCTCP); err != nil {
			return bad("serving.grpc_tcp", "%v", err)
		}
	}
	if c.Serving.SocketGroup != "" {
		if _, err := serve.LookupGroup(c.Serving.SocketGroup); err != nil {
			return bad("serving.socket_group", "%v", err)
		}
	}
	for name, mo := range c.Serving.Models {
		if err := mo.Validate(); err != nil {
			return bad("serving.models."+name, "%v", err)
		}
	}
	if c.MaxBodyBytes <= 0 {
		return bad("max_body_bytes", "%d must be positive", c.MaxBodyBytes)
	}
	return nil
}

// validateEnrollment checks the enrollment fields.
func (c *Config) validateEnrollment(bad func(field, format string, args ...any) error) error {
	if c.EnrollToken != "" && c.EnrollTokenFile != "" {
		return bad("enroll_token_file", "set together with enroll_token; give one")
	}
	if c.EnrollURL != "" {
		if err := enroll.CheckURL(c.EnrollURL); err != nil {
			return bad("enroll_url", "%v", err)
		}
	}
	if c.CAFingerprint != "" {
		if _, err := enroll.ParseFingerprint(c.CAFingerprint); err != nil {
			return bad("ca_fingerprint", "%v", err)
		}
	}
	if c.EnrollToken == "" && c.EnrollTokenFile == "" {
		return nil
	}
	switch {
	case !c.TLS():
		return bad("enroll_token", "enrollment gives a certificate for a TLS broker, but broker %q is plain; use mqtts://", c.Broker)
	case c.EnrollURL == "":
		return bad("enroll_url", "empty; set the control plane's device API, https://host:port (starling-control prints it as device-api)")
	case c.CAFile == "" && c.CAFingerprint == "":
		return bad("ca_file", "empty, and no ca_fingerprint; pin the fleet CA with one of them (starling-control prints ca-fingerprint)")
	}
	return nil
}

// FileMode returns SocketMode parsed (call after Validate).
func (c *Config) FileMode() os.FileMode {
	m, _ := strconv.ParseUint(c.SocketMode, 8, 32)
	return os.FileMode(m)
}
