// Command starling-agent runs on every device: it serves the device's models
// on a local socket and follows the control plane over MQTT.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/starling-edge/starling/agent"
	_ "github.com/starling-edge/starling/agent/runtime/gotflite" // registers the pure-Go TFLite engine
	"github.com/starling-edge/starling/agent/uplink"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "starling-agent:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseConfig(args, stderr)
	if err != nil {
		return err
	}
	root, err := os.ReadFile(cfg.TrustRoot)
	if err != nil {
		return fmt.Errorf("trust_root: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	a, err := agent.New(agent.Options{
		DeviceID:     cfg.DeviceID,
		Broker:       cfg.Broker,
		DataDir:      cfg.Data,
		Socket:       cfg.Socket,
		SocketMode:   cfg.FileMode(),
		TCP:          cfg.TCP,
		Serving:      cfg.Serving,
		TrustRoot:    root,
		MetadataURL:  cfg.MetadataURL,
		Uplink:       uplink.Options{ChunkSize: cfg.ChunkSize},
		MaxBodyBytes: cfg.MaxBodyBytes,
		CacheBytes:   cfg.CacheBytes,
		Logger:       log,
		OnServing: func(socket, tcp string) {
			fmt.Fprintf(stdout, "starling-agent: device %s serving on unix:%s\n", cfg.DeviceID, socket)
			if tcp != "" {
				fmt.Fprintf(stdout, "starling-agent: device %s serving on http://%s\n", cfg.DeviceID, tcp)
			}
		},
	})
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

// parseConfig applies Default -> --config file -> flags, then Validate.
func parseConfig(args []string, stderr io.Writer) (agent.Config, error) {
	cfg := agent.Default()
	fs := flag.NewFlagSet("starling-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configFile := fs.String("config", "", "YAML config `file` (same fields as the flags)")
	var flagCfg agent.Config
	fs.StringVar(&flagCfg.DeviceID, "device-id", "", "device `id` (1-64 of [A-Za-z0-9._-])")
	fs.StringVar(&flagCfg.Broker, "broker", "", "MQTT broker `url`, mqtt://host:port (default "+cfg.Broker+")")
	fs.StringVar(&flagCfg.Data, "data", "", "`dir` for the model cache and state (default "+cfg.Data+")")
	fs.StringVar(&flagCfg.Socket, "socket", "", "unix socket `path` for the local API (default DIR/agent.sock)")
	fs.StringVar(&flagCfg.TrustRoot, "trust-root", "", "operator's TUF root.json `file` (the device's trust anchor)")
	fs.StringVar(&flagCfg.MetadataURL, "metadata-url", "", "control plane `url` to read TUF metadata from over HTTP (default: over MQTT)")
	fs.StringVar(&flagCfg.TCP, "tcp", "", "optional loopback `addr` for the local API, e.g. 127.0.0.1:8080")
	fs.StringVar(&flagCfg.Serving.GRPCTCP, "grpc-tcp", "", "optional loopback `addr` for the local gRPC API, e.g. 127.0.0.1:8081")
	fs.IntVar(&flagCfg.ChunkSize, "chunk-size", 0, "artifact fetch chunk size in `bytes` (default 262144)")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q: %w", fs.Args(), agent.ErrConfig)
	}
	if *configFile != "" {
		if err := cfg.LoadFile(*configFile); err != nil {
			return cfg, err
		}
	}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "device-id":
			cfg.DeviceID = flagCfg.DeviceID
		case "broker":
			cfg.Broker = flagCfg.Broker
		case "data":
			cfg.Data = flagCfg.Data
		case "socket":
			cfg.Socket = flagCfg.Socket
		case "trust-root":
			cfg.TrustRoot = flagCfg.TrustRoot
		case "metadata-url":
			cfg.MetadataURL = flagCfg.MetadataURL
		case "tcp":
			cfg.TCP = flagCfg.TCP
		case "grpc-tcp":
			cfg.Serving.GRPCTCP = flagCfg.Serving.GRPCTCP
		case "chunk-size":
			cfg.ChunkSize = flagCfg.ChunkSize
		}
	})
	return cfg, cfg.Validate()
}
