// Command starling-control runs the Starling control plane: the model and
// device registries, the REST API, and (unless --broker names an external
// one) an embedded MQTT broker.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
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
	cfg, err := loadConfig(args, stderr)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.slogLevel()}))
	srv, err := controlplane.New(controlplane.Options{
		DataDir:   cfg.DataDir,
		HTTPAddr:  cfg.Listen,
		MQTTAddr:  cfg.MQTTListen,
		BrokerURL: cfg.Broker,
		Logger:    logger,
	})
	if err != nil {
		return err
	}
	if err := srv.Start(ctx); err != nil {
		srv.Close()
		return err
	}
	fmt.Fprintf(stdout, "starling-control: api http://%s\n", srv.HTTPAddr())
	fmt.Fprintf(stdout, "starling-control: mqtt %s\n", srv.BrokerURL())
	<-ctx.Done()
	logger.Info("shutting down")
	return srv.Close()
}
