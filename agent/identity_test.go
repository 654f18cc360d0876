package agent

import (
	"errors"
	"strings"
	"testing"

	"github.com/starling-edge/starling/agent/enroll"
)

// TestNewIdentityChecks: a configured device id that
// disagrees with the device certificate is refused, and an HTTPS artifact
// URL needs the identity.
func TestNewIdentityChecks(t *testing.T) {
	id := &enroll.Identity{DeviceID: "cam-7"}
	for _, tc := range []struct {
		name string
		opts Options
		msg  string
	}{
		{"id disagrees with certificate", Options{DeviceID: "cam-8", Identity: id}, `"cam-8" disagrees with the device certificate, which is for "cam-7"`},
		{"artifact URL without identity", Options{DeviceID: "cam-8", ArtifactURL: "https://127.0.0.1:8443"}, "needs the device identity"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.DataDir, tc.opts.Broker, tc.opts.TrustRoot = t.TempDir(), "mqtts://127.0.0.1:1883", []byte("{}")
			_, err := New(tc.opts)
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want ErrConfig mentioning %q", err, tc.msg)
			}
		})
	}
}
