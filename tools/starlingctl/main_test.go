package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/starling-edge/starling/controlplane"
	"github.com/starling-edge/starling/shared/trust"
	"github.com/starling-edge/starling/shared/trust/tuf"
)

// startControlPlane starts a control plane and points starlingctl at the
// admin token it writes at first start ($STARLING_TOKEN_FILE).
func startControlPlane(t *testing.T) string {
	t.Helper()
	data := t.TempDir()
	cp, err := controlplane.New(controlplane.Options{DataDir: data, HTTPAddr: "127.0.0.1:0", MQTTAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cp.Close() })
	t.Setenv("STARLING_TOKEN", "")
	t.Setenv("STARLING_TOKEN_FILE", filepath.Join(data, controlplane.AdminTokenFile))
	return "http://" + cp.HTTPAddr()
}

// TestKeysAndPush: keys init, model push, keys rotate (root, then
// targets) and another push, against a real control plane.
func TestKeysAndPush(t *testing.T) {
	server := startControlPlane(t)
	dir := filepath.Join(t.TempDir(), "keys")
	ctl := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := run(context.Background(), append(args, "--dir", dir, "--server", server), &out)
		return out.String(), err
	}
	out, err := ctl("keys", "init")
	if err != nil {
		t.Fatal(err)
	}
	rootKey, err := trust.ReadPrivateKey(filepath.Join(dir, rootKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, tuf.KeyID(rootKey.Public())[:16]) {
		t.Fatalf("output does not name the root key: %q", out)
	}
	if _, err := ctl("keys", "init"); err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Fatalf("second keys init: %v", err)
	}
	model := filepath.Join(t.TempDir(), "m.tflite")
	os.WriteFile(model, []byte("model bytes"), 0o644)
	if out, err := ctl("model", "push", "--name", "demo", "--version", "1", "--file", model); err != nil || !strings.Contains(out, "targets version 2") {
		t.Fatalf("push: %v %q", err, out)
	}
	for _, role := range []string{"root", "targets"} {
		if out, err := ctl("keys", "rotate", "--role", role); err != nil || !strings.Contains(out, role+" key rotated") {
			t.Fatalf("rotate %s: %v %q", role, err, out)
		}
	}
	root, _ := os.ReadFile(filepath.Join(dir, rootJSONFile))
	if md, err := tuf.ParseRoot(root); err != nil || md.Signed.Version != 3 {
		t.Fatalf("root.json after two rotations: %v", err)
	}
	if out, err := ctl("model", "push", "--name", "demo", "--version", "2", "--file", model+"x"); err == nil {
		t.Fatalf("push of a missing file: %q", out)
	}
	os.WriteFile(model, []byte("model bytes 2"), 0o644)
	if out, err := ctl("model", "push", "--name", "demo", "--version", "2", "--file", model); err != nil || !strings.Contains(out, "targets version 4") {
		t.Fatalf("push after rotations: %v %q", err, out)
	}
	// A push signed with the retired targets key is refused by the control plane.
	os.WriteFile(model, []byte("model bytes 3"), 0o644)
	if _, err := ctl("model", "push", "--name", "demo", "--version", "3", "--file", model, "--key", filepath.Join(dir, targetsKeyFile+".old")); err == nil || !strings.Contains(err.Error(), "unknown-key") {
		t.Fatalf("push with the old targets key: %v", err)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		nil,
		{"model"},
		{"model", "fly"},
		{"model", "push", "--name", "demo"},
		{"model", "push", "--name", "demo", "--version", "1", "--file", "x.tflite", "--expires", "-1h"},
		{"device", "assign", "cam-1"},
		{"device", "assign", "--model", "demo"},
		{"device", "assign", "cam-1", "--model", "demo:1", "cam-2"},
		{"device", "show"},
	} {
		err := run(context.Background(), args, &bytes.Buffer{})
		if !errors.Is(err, errUsage) {
			t.Errorf("run(%q) = %v, want a usage error", args, err)
		}
	}
}

func TestUnreachableServer(t *testing.T) {
	// Each command line parses (the device id may stand among the flags), so
	// the error is the unreachable control plane, not usage.
	for _, args := range [][]string{
		{"device", "list", "--server", "http://127.0.0.1:1"},
		{"device", "assign", "--server", "http://127.0.0.1:1", "cam-1", "--model", "demo:1"},
		{"device", "assign", "cam-1", "--model", "demo:1", "--server", "http://127.0.0.1:1"},
		{"device", "show", "--server", "http://127.0.0.1:1", "cam-1"},
	} {
		err := run(context.Background(), args, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), "unreachable") {
			t.Errorf("run(%q) = %v, want unreachable", args, err)
		}
	}
}
