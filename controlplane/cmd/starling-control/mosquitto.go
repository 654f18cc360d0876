package main

import (
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/starling-edge/starling/controlplane/fleet"
)

// mosquittoConfig writes a Mosquitto configuration for the fleet whose CA
// lives in --data (creating the CA on first use).
func mosquittoConfig(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("starling-control mosquitto-config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "", "the control plane's data directory (required; holds the fleet CA)")
	out := fs.String("out", "", "directory for mosquitto.conf, certificates, CRL and ACL (required)")
	listen := fs.String("listen", "127.0.0.1:8883", "the broker's TLS listen address")
	hosts := fs.String("hosts", "", "comma-separated names and IPs for the broker certificate (default: the listen host, localhost, 127.0.0.1, ::1)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *data == "" || *out == "" || fs.NArg() > 0 {
		return fmt.Errorf("%w: mosquitto-config needs --data and --out (and no other arguments)", errConfig)
	}
	f, err := fleet.Open(fleet.Options{Dir: filepath.Join(*data, "fleet")})
	if err != nil {
		return err
	}
	defer f.Close()
	var hs []string
	if *hosts != "" {
		hs = strings.Split(*hosts, ",")
	}
	if err := f.WriteMosquittoConfig(fleet.MosquittoOptions{Dir: *out, Listen: *listen, Hosts: hs}); err != nil {
		return err
	}
	abs, _ := filepath.Abs(*out)
	fmt.Fprintf(stdout, "wrote %s\n", filepath.Join(abs, fleet.MosquittoConf))
	fmt.Fprintf(stdout, "start it:  mosquitto -c %s\n", filepath.Join(abs, fleet.MosquittoConf))
	fmt.Fprintf(stdout, "then run:  starling-control --data %s --broker mqtts://%s --mosquitto-dir %s\n", *data, *listen, abs)
	return nil
}
