package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/starling-edge/starling/agent"
	"github.com/starling-edge/starling/agent/internal/testcontrol"
	"github.com/starling-edge/starling/shared/trust"
	"github.com/starling-edge/starling/shared/trust/tuf"
	"github.com/starling-edge/starling/shared/wire"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func writeKey(t *testing.T, dir string) string {
	t.Helper()
	k, err := trust.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	pub := []ed25519.PublicKey{k.Public()}
	root, err := tuf.NewRoot(tuf.RootSpec{Root: pub, Targets: pub, Snapshot: pub, Timestamp: pub})
	if err != nil {
		t.Fatal(err)
	}
	b, err := tuf.Sign(root, k)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "root.json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestRunServesAndStopsCleanly(t *testing.T) {
	ctl := testcontrol.Start(t)
	dir, err := os.MkdirTemp("", "main")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	key := writeKey(t, dir)
	// The file sets a wrong device id and broker; flags win over the file.
	cfgFile := filepath.Join(dir, "agent.yaml")
	os.WriteFile(cfgFile, []byte("device_id: from-file\nbroker: mqtt://127.0.0.1:1\nsocket_mode: \"0600\"\n"), 0o600)
	data := filepath.Join(dir, "data")
	args := []string{"--config", cfgFile, "--device-id", "cam-1", "--broker", ctl.Broker(), "--data", data, "--trust-root", key}

	var stdout, stderr syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, &stdout, &stderr) }()
	sock := filepath.Join(data, "agent.sock")
	want := "starling-agent: device cam-1 serving on unix:" + sock + "\n"
	testcontrol.Wait(t, 5*time.Second, "serving line", func() bool { return stdout.String() == want })
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode from config file: %v %v, want 0600", fi.Mode(), err)
	}
	testcontrol.Wait(t, 5*time.Second, "online status", func() bool { return ctl.Status("cam-1") == wire.Online })
	// The first reported state follows the online status; stop only after
	// it has arrived, or the check below races the shutdown.
	testcontrol.Wait(t, 5*time.Second, "reported state", func() bool {
		_, ok := ctl.Reported("cam-1")
		return ok
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket not removed: %v", err)
	}
	testcontrol.Wait(t, 5*time.Second, "offline status", func() bool { return ctl.Status("cam-1") == wire.Offline })
	rs, _ := ctl.Reported("cam-1")
	if rs.DeviceID != "cam-1" || !strings.Contains(strings.Join(rs.Engines, ","), "gotflite") {
		t.Errorf("reported %+v, want device cam-1 with engine gotflite", rs)
	}
}

func TestRunRejectsBadConfig(t *testing.T) {
	dir := t.TempDir()
	key := writeKey(t, dir)
	fp := "sha256:" + strings.Repeat("ab", 32)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--broker", "mqtt://127.0.0.1:1883", "--trust-root", key, "--data", dir}, "device_id:"},
		// mqtts:// (the default) takes the id from the certificate, which
		// an unenrolled device lacks.
		{[]string{"--trust-root", key, "--data", dir}, "no device certificate"},
		{[]string{"--enroll-token", "t", "--trust-root", key, "--data", dir}, "enroll_url:"},
		{[]string{"--enroll-token", "t", "--enroll-url", "https://127.0.0.1:1", "--trust-root", key, "--data", dir}, "ca_file:"},
		{[]string{"--enroll-token", "t", "--enroll-url", "http://127.0.0.1:1", "--ca-fingerprint", fp, "--trust-root", key, "--data", dir}, "enroll_url:"},
		{[]string{"--enroll-token", "t", "--enroll-token-file", "f", "--trust-root", key, "--data", dir}, "enroll_token_file:"},
		{[]string{"--enroll-token", "t", "--broker", "mqtt://127.0.0.1:1883", "--device-id", "d", "--trust-root", key, "--data", dir}, "enroll_token:"},
		{[]string{"--ca-fingerprint", "sha256:zz", "--trust-root", key, "--data", dir}, "ca_fingerprint:"},
		{[]string{"--artifact-url", "https://127.0.0.1:8443", "--broker", "mqtt://127.0.0.1:1883", "--device-id", "d", "--trust-root", key, "--data", dir}, "artifact_url:"},
		{[]string{"--metadata-url", "http://127.0.0.1:8080", "--trust-root", key, "--data", dir}, "metadata_url:"},
		{[]string{"--enroll-token-file", filepath.Join(dir, "missing"), "--enroll-url", "https://127.0.0.1:1", "--ca-fingerprint", fp, "--trust-root", key, "--data", dir}, "enroll_token_file: open"},
		{[]string{"--device-id", "a/b", "--trust-root", key, "--data", dir}, "device_id:"},
		{[]string{"--device-id", "d", "--data", dir}, "trust_root:"},
		{[]string{"--device-id", "d", "--trust-root", key, "--data", dir, "--tcp", "192.168.1.2:80"}, "tcp:"},
		{[]string{"--device-id", "d", "--trust-root", filepath.Join(dir, "missing"), "--data", dir}, "trust_root:"},
		{[]string{"--device-id", "d", "--trust-root", key, "extra"}, "unexpected arguments"},
	}
	for _, tt := range tests {
		err := run(context.Background(), tt.args, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("run %v: %v, want error containing %q", tt.args, err, tt.want)
		}
		if strings.HasSuffix(tt.want, ":") && tt.want != "trust_root:" && !errors.Is(err, agent.ErrConfig) {
			t.Errorf("run %v: %v does not wrap ErrConfig", tt.args, err)
		}
	}
}
