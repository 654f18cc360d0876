package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestBinaryDeps proves the agent binary links no cgo outside the
// standard library, no test-only engine
// or fake control plane, and no broker.
func TestBinaryDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}} {{.Standard}} {{len .CgoFiles}}", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var sawGotflite bool
	for _, l := range lines {
		f := strings.Fields(l)
		path, std, cgo := f[0], f[1], f[2]
		// The standard library's optional cgo (net's resolver) is
		// dropped by CGO_ENABLED=0; nothing else may need cgo.
		if std == "false" && cgo != "0" {
			t.Errorf("agent links cgo package %s", path)
		}
		for _, banned := range []string{"agent/internal/testengine", "agent/internal/testcontrol", "mochi-mqtt", "controlplane"} {
			if strings.Contains(path, banned) {
				t.Errorf("agent binary links %s", path)
			}
		}
		sawGotflite = sawGotflite || strings.HasSuffix(path, "agent/runtime/gotflite")
	}
	if !sawGotflite {
		t.Error("agent binary does not link the gotflite engine")
	}
}
