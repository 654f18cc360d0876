package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"gopkg.in/yaml.v3"

	"github.com/starling-edge/starling/controlplane"
)

// errConfig wraps every configuration error; messages name the field.
var errConfig = errors.New("invalid configuration")

// config is the command's configuration: defaults, then the --config YAML
// file, then flags.
type config struct {
	DataDir    string `yaml:"data"`        // --data; required
	Listen     string `yaml:"listen"`      // --listen; default 127.0.0.1:8080
	MQTTListen string `yaml:"mqtt_listen"` // --mqtt-listen; default 127.0.0.1:1883
	Broker     string `yaml:"broker"`      // --broker; empty: run the embedded broker
	// DeviceListen is the device API (enrollment) TLS address; "off" disables it.
	DeviceListen string `yaml:"device_listen"` // --device-listen; default 127.0.0.1:8443
	// InsecureMQTT is the embedded broker's plain listener WITHOUT authentication; development only.
	InsecureMQTT string `yaml:"dev_insecure_mqtt_listen"` // --dev-insecure-mqtt-listen; default off
	MosquittoDir string `yaml:"mosquitto_dir"`            // --mosquitto-dir; a `mosquitto-config` output to keep current
	LogLevel     string `yaml:"log_level"`                // --log-level; debug, info (default), warn, error
}

func defaultConfig() config {
	return config{Listen: controlplane.DefaultHTTPAddr, MQTTListen: controlplane.DefaultMQTTAddr, DeviceListen: DefaultDeviceAddr, LogLevel: "info"}
}

// validate checks the fields the control plane does not check itself.
func (c config) validate() error {
	if c.DataDir == "" {
		return fmt.Errorf("%w: data (--data) is required: the directory for the store and artifacts", errConfig)
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		return err
	}
	err := c.options().Validate()
	if err != nil {
		return fmt.Errorf("%w: %v", errConfig, err)
	}
	return nil
}

// DefaultDeviceAddr is where the device API listens unless configured.
const DefaultDeviceAddr = "127.0.0.1:8443"

// options maps the configuration onto the control plane's Options.
func (c config) options() controlplane.Options {
	o := controlplane.Options{DataDir: c.DataDir, HTTPAddr: c.Listen, MQTTAddr: c.MQTTListen, BrokerURL: c.Broker,
		DeviceAddr: c.DeviceListen, InsecureMQTTAddr: c.InsecureMQTT, MosquittoDir: c.MosquittoDir}
	if o.DeviceAddr == "off" {
		o.DeviceAddr = ""
	}
	return o
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("%w: log_level (--log-level) %q: want debug, info, warn or error", errConfig, s)
	}
	return l, nil
}

func (c config) slogLevel() slog.Level {
	l, _ := parseLevel(c.LogLevel)
	return l
}

// readConfigFile merges a YAML file over c; unknown keys are errors.
func readConfigFile(path string, c *config) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("%w: config file: %v", errConfig, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: config file %s: %v", errConfig, path, err)
	}
	return nil
}

// loadConfig applies defaults, then the file named by --config, then the
// other flags given on the command line, and validates the result. The
// command line is parsed twice: once to find --config (and to report usage
// errors), then over the file's values so that only the flags given
// override them. Each flag is declared once, in controlFlags.
func loadConfig(args []string, stderr io.Writer) (config, error) {
	probe := defaultConfig()
	fs, configPath := controlFlags(&probe, stderr)
	if err := fs.Parse(args); err != nil {
		return probe, err
	}
	if fs.NArg() > 0 {
		return probe, fmt.Errorf("%w: unexpected arguments %q", errConfig, fs.Args())
	}
	cfg := defaultConfig()
	if *configPath != "" {
		if err := readConfigFile(*configPath, &cfg); err != nil {
			return cfg, err
		}
	}
	fs, _ = controlFlags(&cfg, io.Discard)
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	return cfg, cfg.validate()
}

// controlFlags binds the command line to cfg; the values already in cfg are
// the flags' defaults.
func controlFlags(cfg *config, out io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("starling-control", flag.ContinueOnError)
	fs.SetOutput(out)
	configPath := fs.String("config", "", "YAML config file (keys: data, listen, mqtt_listen, broker, device_listen, dev_insecure_mqtt_listen, mosquitto_dir, log_level)")
	fs.StringVar(&cfg.DataDir, "data", cfg.DataDir, "data directory for the store and artifacts (required)")
	fs.StringVar(&cfg.Listen, "listen", cfg.Listen, "REST API listen address")
	fs.StringVar(&cfg.MQTTListen, "mqtt-listen", cfg.MQTTListen, "embedded MQTT broker listen address")
	fs.StringVar(&cfg.Broker, "broker", cfg.Broker, "external broker URL mqtt://host:port; when set, no embedded broker runs")
	fs.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "debug, info, warn or error")
	fs.StringVar(&cfg.DeviceListen, "device-listen", cfg.DeviceListen, "device API (enrollment) TLS listen address, or off")
	fs.StringVar(&cfg.InsecureMQTT, "dev-insecure-mqtt-listen", cfg.InsecureMQTT, "INSECURE: extra plain MQTT listener with no authentication and no ACLs, for development only (default off)")
	fs.StringVar(&cfg.MosquittoDir, "mosquitto-dir", cfg.MosquittoDir, "directory written by `starling-control mosquitto-config`: keep its CRL and ACL current and reload Mosquitto on revocation")
	return fs, configPath
}
