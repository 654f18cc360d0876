package main

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/starling-edge/starling/shared/trust"
)

func TestKeysInit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	var out bytes.Buffer
	if err := run(context.Background(), []string{"keys", "init", "--dir", dir}, &out); err != nil {
		t.Fatal(err)
	}
	k, err := trust.ReadPrivateKey(filepath.Join(dir, releaseKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := trust.ReadPublicKey(filepath.Join(dir, releasePubFile))
	if err != nil || trust.KeyID(pub) != k.ID {
		t.Fatalf("public key does not match: %v", err)
	}
	if !strings.Contains(out.String(), k.ID[:16]) {
		t.Fatalf("output does not name the key: %q", out.String())
	}
	err = run(context.Background(), []string{"keys", "init", "--dir", dir}, &out)
	if err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Fatalf("second keys init: %v", err)
	}
	k2, _ := trust.ReadPrivateKey(filepath.Join(dir, releaseKeyFile))
	if k2.ID != k.ID {
		t.Fatal("key was replaced")
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
