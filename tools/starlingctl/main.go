// Command starlingctl is the operator's tool: it makes and keeps the offline
// TUF root and targets keys, signs targets metadata for model versions and
// agent binaries and publishes them, and assigns models to devices through
// the control plane's REST API.
//
// Private keys never leave this tool: the control plane only ever receives
// signed metadata and artifacts.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "starlingctl:", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

const usage = `usage: starlingctl <command> [flags]

commands:
  keys init      create the offline root and targets keys and the repository's root.json
  keys rotate    replace the root or targets key (devices follow the new root)
  model push     sign a model version and publish it to the control plane
  model list     list published model versions
  agent push     sign an agent binary (version, os, arch) and publish it
  agent list     list published agent binaries
  device list    list devices and their state
  device show    show one device, with its recent events
  device assign  set the model versions a device should serve
  device enroll-token  make a one-time enrollment token [--device ID] [--ttl 1h]
  device revoke  revoke a device's certificates (cuts it off within seconds)

Run 'starlingctl <command> -h' for a command's flags.
Every command accepts --token TOKEN or --token-file FILE (the API token).
Environment: STARLING_SERVER (control plane URL), STARLING_KEYS (key directory),
STARLING_TOKEN or STARLING_TOKEN_FILE (API token; the control plane writes
its first admin token to DATA/admin.token).`

func run(ctx context.Context, args []string, out io.Writer) error {
	args, err := extractTokenFlags(args)
	if err != nil {
		return err
	}
	if len(args) < 2 {
		if len(args) == 1 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			fmt.Fprintln(out, usage)
			return nil
		}
		return fmt.Errorf("%w: %s", errUsage, usage)
	}
	cmd := args[0] + " " + args[1]
	rest := args[2:]
	switch cmd {
	case "keys init":
		return keysInit(ctx, rest, out)
	case "keys rotate":
		return keysRotate(ctx, rest, out)
	case "model push":
		return modelPush(ctx, rest, out)
	case "model list":
		return modelList(ctx, rest, out)
	case "agent push":
		return agentPush(ctx, rest, out)
	case "agent list":
		return agentList(ctx, rest, out)
	case "device list":
		return deviceList(ctx, rest, out)
	case "device show":
		return deviceShow(ctx, rest, out)
	case "device assign":
		return deviceAssign(ctx, rest, out)
	case "device enroll-token":
		return deviceEnrollToken(ctx, rest, out)
	case "device revoke":
		return deviceRevoke(ctx, rest, out)
	}
	return fmt.Errorf("%w: unknown command %q\n%s", errUsage, cmd, usage)
}
