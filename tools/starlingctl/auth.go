package main

import (
	"context"

	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"
)

// API token resolution, in order: --token, --token-file (both accepted
// anywhere on the command line, by every command), $STARLING_TOKEN,
// $STARLING_TOKEN_FILE. The control plane writes its bootstrap admin
// token to DATA/admin.token at first start.
var tokenFlag, tokenFileFlag string

// extractTokenFlags removes --token/--token-file (with "=" or a separate
// value) from args and records them.
func extractTokenFlags(args []string) ([]string, error) {
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || (name != "token" && name != "token-file") {
			rest = append(rest, a)
			continue
		}
		if !hasVal {
			if i+1 >= len(args) {
				return nil, fmt.Errorf("%w: --%s needs a value", errUsage, name)
			}
			i++
			val = args[i]
		}
		if name == "token" {
			tokenFlag = val
		} else {
			tokenFileFlag = val
		}
	}
	return rest, nil
}

// apiToken returns the token to send, or "".
func apiToken() (string, error) {
	if tokenFlag != "" {
		return tokenFlag, nil
	}
	file := tokenFileFlag
	if file == "" {
		if t := os.Getenv("STARLING_TOKEN"); t != "" {
			return t, nil
		}
		file = os.Getenv("STARLING_TOKEN_FILE")
	}
	if file == "" {
		return "", nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("API token file: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// deviceEnrollToken asks the control plane for a one-time enrollment token.
func deviceEnrollToken(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlags("device enroll-token")
	server := fs.String("server", defaultServer(), "control plane URL (env STARLING_SERVER)")
	device := fs.String("device", "", "bind the token to this device id (default: the device names itself)")
	ttl := fs.Duration("ttl", time.Hour, "how long the token stays valid (at most 720h)")
	asJSON := fs.Bool("json", false, "print the full answer as JSON")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	if *ttl <= 0 {
		return fmt.Errorf("%w: --ttl must be positive", errUsage)
	}
	var resp struct {
		Token       string    `json:"token"`
		DeviceID    string    `json:"device_id,omitempty"`
		Expires     time.Time `json:"expires"`
		Fingerprint string    `json:"ca_fingerprint"`
	}
	body := map[string]string{"device_id": *device, "ttl": ttl.String()}
	if err := (&client{base: *server}).do(ctx, "POST", "/api/v1/enroll-tokens", body, &resp); err != nil {
		return fmt.Errorf("device enroll-token: %w", err)
	}
	if *asJSON {
		return printJSON(out, resp)
	}
	fmt.Fprintln(out, resp.Token)
	return nil
}

// deviceRevoke revokes every certificate of a device.
func deviceRevoke(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlags("device revoke")
	server := fs.String("server", defaultServer(), "control plane URL (env STARLING_SERVER)")
	id, err := parseWithID(fs, args)
	if err != nil {
		return err
	}
	if err := (&client{base: *server}).do(ctx, "POST", "/api/v1/devices/"+url.PathEscape(id)+"/revoke", nil, nil); err != nil {
		return fmt.Errorf("device revoke %s: %w", id, err)
	}
	fmt.Fprintf(out, "device %s revoked: it is cut off from the broker and the API\n", id)
	return nil
}
