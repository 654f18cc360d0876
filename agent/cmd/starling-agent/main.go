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
	"strings"
	"syscall"

	"github.com/starling-edge/starling/agent"
	"github.com/starling-edge/starling/agent/enroll"
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
	id, err := identity(ctx, cfg, log)
	if err != nil {
		return err
	}
	deviceID := cfg.DeviceID
	if id != nil {
		deviceID = id.DeviceID
	}
	a, err := agent.New(agent.Options{
		DeviceID:     cfg.DeviceID,
		Identity:     id,
		Broker:       cfg.Broker,
		DataDir:      cfg.Data,
		Socket:       cfg.Socket,
		SocketMode:   cfg.FileMode(),
		TCP:          cfg.TCP,
		Serving:      cfg.Serving,
		TrustRoot:    root,
		MetadataURL:  cfg.MetadataURL,
		ArtifactURL:  cfg.ArtifactURL,
		Uplink:       uplink.Options{ChunkSize: cfg.ChunkSize},
		MaxBodyBytes: cfg.MaxBodyBytes,
		CacheBytes:   cfg.CacheBytes,
		Logger:       log,
		OnServing: func(socket, tcp string) {
			fmt.Fprintf(stdout, "starling-agent: device %s serving on unix:%s\n", deviceID, socket)
			if tcp != "" {
				fmt.Fprintf(stdout, "starling-agent: device %s serving on http://%s\n", deviceID, tcp)
			}
		},
	})
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

// identity returns the device's fleet identity for a TLS broker: the one
// stored in the data directory, or a new one from the enrollment token
// (nil for a plain development broker).
func identity(ctx context.Context, cfg agent.Config, log *slog.Logger) (*enroll.Identity, error) {
	if !cfg.TLS() {
		return nil, nil
	}
	opts := enroll.Options{
		Dir: cfg.IdentityDir(), URL: cfg.EnrollURL, Token: cfg.EnrollToken, DeviceID: cfg.DeviceID,
		CAFingerprint: cfg.CAFingerprint, Logger: log.With("component", "enroll"),
	}
	// The token and the CA file are read only when the device still has
	// to enroll: once it holds a certificate they may be gone.
	if _, err := enroll.Load(opts.Dir); errors.Is(err, enroll.ErrNotEnrolled) {
		if cfg.EnrollTokenFile != "" {
			b, err := os.ReadFile(cfg.EnrollTokenFile)
			if err != nil {
				return nil, fmt.Errorf("enroll_token_file: %w", err)
			}
			opts.Token = strings.TrimSpace(string(b))
		}
		if cfg.CAFile != "" {
			if opts.CAPEM, err = os.ReadFile(cfg.CAFile); err != nil {
				return nil, fmt.Errorf("ca_file: %w", err)
			}
		}
	}
	id, _, err := enroll.Ensure(ctx, opts)
	return id, err
}

// parseConfig applies Default -> --config file -> flags, then Validate.
// The command line is parsed twice: once to find --config (and to report
// usage errors), then over the file's values so that only the flags given
// override them. Each flag is declared once, in agentFlags.
func parseConfig(args []string, stderr io.Writer) (agent.Config, error) {
	probe := agent.Default()
	fs, configFile := agentFlags(&probe, stderr)
	if err := fs.Parse(args); err != nil {
		return probe, err
	}
	if fs.NArg() > 0 {
		return probe, fmt.Errorf("unexpected arguments %q: %w", fs.Args(), agent.ErrConfig)
	}
	cfg := agent.Default()
	if *configFile != "" {
		if err := cfg.LoadFile(*configFile); err != nil {
			return cfg, err
		}
	}
	fs, _ = agentFlags(&cfg, io.Discard)
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	return cfg, cfg.Validate()
}

// agentFlags binds the command line to cfg; the values already in cfg are
// the flags' defaults.
func agentFlags(cfg *agent.Config, out io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("starling-agent", flag.ContinueOnError)
	fs.SetOutput(out)
	configFile := fs.String("config", "", "YAML config `file` (same fields as the flags)")
	fs.StringVar(&cfg.DeviceID, "device-id", cfg.DeviceID, "device `id` (1-64 of [A-Za-z0-9._-]); with mqtts:// it comes from the certificate and may be left out")
	fs.StringVar(&cfg.Broker, "broker", cfg.Broker, "MQTT broker `url`: mqtts://host:port with the device certificate, or mqtt://host:port for a development listener")
	fs.StringVar(&cfg.Data, "data", cfg.Data, "`dir` for the model cache and state")
	fs.StringVar(&cfg.Socket, "socket", cfg.Socket, "unix socket `path` for the local API (default DIR/agent.sock)")
	fs.StringVar(&cfg.TrustRoot, "trust-root", cfg.TrustRoot, "operator's TUF root.json `file` (the device's trust anchor)")
	fs.StringVar(&cfg.MetadataURL, "metadata-url", cfg.MetadataURL, "control plane `url` to read TUF metadata from over HTTP(S); the device API with mqtts:// (default: over MQTT)")
	fs.StringVar(&cfg.ArtifactURL, "artifact-url", cfg.ArtifactURL, "device API `url` (https) to download artifacts from with the device certificate (default: over MQTT)")
	fs.StringVar(&cfg.EnrollURL, "enroll-url", cfg.EnrollURL, "control plane device API `url`, https://host:port, to enroll at (first start only)")
	fs.StringVar(&cfg.EnrollToken, "enroll-token", cfg.EnrollToken, "one-time enrollment `token` from starlingctl device enroll-token (first start only)")
	fs.StringVar(&cfg.EnrollTokenFile, "enroll-token-file", cfg.EnrollTokenFile, "`file` holding the enrollment token (first start only)")
	fs.StringVar(&cfg.CAFile, "ca-file", cfg.CAFile, "fleet CA certificate `file` (PEM) to pin when enrolling")
	fs.StringVar(&cfg.CAFingerprint, "ca-fingerprint", cfg.CAFingerprint, "fleet CA `fingerprint` (sha256:...) to pin when enrolling, as starling-control prints it")
	fs.StringVar(&cfg.TCP, "tcp", cfg.TCP, "optional loopback `addr` for the local API, e.g. 127.0.0.1:8080")
	fs.StringVar(&cfg.Serving.GRPCTCP, "grpc-tcp", cfg.Serving.GRPCTCP, "optional loopback `addr` for the local gRPC API, e.g. 127.0.0.1:8081")
	fs.IntVar(&cfg.ChunkSize, "chunk-size", cfg.ChunkSize, "artifact fetch chunk size in `bytes`")
	return fs, configFile
}
