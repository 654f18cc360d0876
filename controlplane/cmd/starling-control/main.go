// Command starling-control runs the Starling control plane: the model and
// device registries, the REST API, the fleet CA and the device API for
// enrollment, and (unless --broker names an external one) an embedded
// MQTT broker with per-device ACLs.
//
//	starling-control --data DIR [flags]                        run
//	starling-control mosquitto-config --data DIR --out DIR2    write a Mosquitto configuration for this fleet
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/starling-edge/starling/controlplane"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "starling-control:", err)
		os.Exit(1)
	}
}

// run starts the control plane and serves until ctx is cancelled.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "mosquitto-config" {
		return mosquittoConfig(args[1:], stdout, stderr)
	}
	cfg, err := loadConfig(args, stderr)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.slogLevel()}))
	opts := cfg.options()
	opts.Logger = logger
	srv, err := controlplane.New(opts)
	if err != nil {
		return err
	}
	if err := srv.Start(ctx); err != nil {
		srv.Close()
		return err
	}
	fmt.Fprintf(stdout, "starling-control: api http://%s\n", srv.HTTPAddr())
	fmt.Fprintf(stdout, "starling-control: mqtt %s\n", srv.BrokerURL())
	if u := srv.DeviceURL(); u != "" {
		fmt.Fprintf(stdout, "starling-control: device-api %s\n", u)
	}
	if u := srv.InsecureBrokerURL(); u != "" {
		fmt.Fprintf(stdout, "starling-control: INSECURE-mqtt %s (no authentication, development only)\n", u)
	}
	fmt.Fprintf(stdout, "starling-control: ca-fingerprint %s\n", srv.Fleet().Fingerprint())
	fmt.Fprintf(stdout, "starling-control: admin-token-file %s\n", filepath.Join(cfg.DataDir, controlplane.AdminTokenFile))
	<-ctx.Done()
	logger.Info("shutting down")
	return srv.Close()
}
