package agent

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"gopkg.in/yaml.v3"

	"github.com/starling-edge/starling/agent/serve"
	"github.com/starling-edge/starling/agent/tufclient"
	"github.com/starling-edge/starling/agent/uplink"
	"github.com/starling-edge/starling/shared/wire"
)

// Config is the agent's configuration as a file (YAML) and flags give it.
// It is built as Default() -> LoadFile -> flags -> Validate.
type Config struct {
	DeviceID     string `yaml:"device_id"`
	Broker       string `yaml:"broker"`       // mqtt://host:port
	Data         string `yaml:"data"`         // cache and state directory
	Socket       string `yaml:"socket"`       // default <data>/agent.sock
	SocketMode   string `yaml:"socket_mode"`  // octal; default "0660"
	TrustRoot    string `yaml:"trust_root"`   // operator's root.json (TUF), the device's trust anchor
	MetadataURL  string `yaml:"metadata_url"` // optional: read TUF metadata over HTTP from this control plane URL instead of MQTT
	TCP          string `yaml:"tcp"`          // optional loopback listener
	ChunkSize    int    `yaml:"chunk_size"`   // bytes; default 256 KiB
	CacheBytes   int64  `yaml:"cache_bytes"`  // 0: no eviction
	MaxBodyBytes int64  `yaml:"max_body_bytes"`
	// Serving configures the local API beyond the socket: gRPC listeners,
	// the sockets' group, and per-model batching, queues, allow lists and
	// routes (see docs/local-api.md).
	Serving Serving `yaml:"serving"`
}

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
		Broker:       "mqtt://127.0.0.1:1883",
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
	if !wire.ValidDeviceID(c.DeviceID) {
		return bad("device_id", "%q is not 1-64 characters of [A-Za-z0-9._-] (not starting with a dot)", c.DeviceID)
	}
	if err := uplink.ParseBroker(c.Broker); err != nil {
		return bad("broker", "%v", err)
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

// FileMode returns SocketMode parsed (call after Validate).
func (c *Config) FileMode() os.FileMode {
	m, _ := strconv.ParseUint(c.SocketMode, 8, 32)
	return os.FileMode(m)
}
