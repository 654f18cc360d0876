package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/starling-edge/starling/shared/trust"
	"github.com/starling-edge/starling/shared/trust/tuf"
)

// TestAgentPush: agent binaries pushed with starlingctl to a real control
// plane are listed, survive a later model push, and a device-side TUF
// client finds and verifies them; a second binary under a published
// release is refused.
func TestAgentPush(t *testing.T) {
	server := startControlPlane(t)
	dir := filepath.Join(t.TempDir(), "keys")
	ctl := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := run(context.Background(), append(args, "--dir", dir, "--server", server), &out)
		return out.String(), err
	}
	list := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := run(context.Background(), append([]string{"agent", "list", "--server", server}, args...), &out)
		return out.String(), err
	}
	files := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(files, name)
		if err := os.WriteFile(p, []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if _, err := ctl("keys", "init"); err != nil {
		t.Fatal(err)
	}
	if _, err := ctl("model", "push", "--name", "demo", "--version", "1", "--file", write("m.tflite", "model bytes")); err != nil {
		t.Fatal(err)
	}
	arm64, armv7 := "agent for arm64", "agent for armv7, a little longer"
	out, err := ctl("agent", "push", "--version", "1.4.0", "--arch", "arm64", "--file", write("a64", arm64))
	if err != nil || !strings.Contains(out, "as target agent/1.4.0/linux-arm64 in targets version 3") {
		t.Fatalf("agent push arm64: %v %q", err, out)
	}
	out, err = ctl("agent", "push", "--version", "1.4.0", "--os", "linux", "--arch", "arm", "--arm", "7", "--min-agent-version", "1.2",
		"--file", write("a7", armv7), "--expires", "720h")
	if err != nil || !strings.Contains(out, "agent/1.4.0/linux-armv7 in targets version 4") {
		t.Fatalf("agent push armv7: %v %q", err, out)
	}
	// Model pushes sign on top of the agent targets, and agent pushes on
	// top of the models.
	if _, err := ctl("model", "push", "--name", "demo", "--version", "2", "--file", write("m2.tflite", "model bytes 2")); err != nil {
		t.Fatal(err)
	}
	// A release is immutable.
	if _, err := ctl("agent", "push", "--version", "1.4.0", "--arch", "arm64", "--file", write("evil", "other bytes")); err == nil ||
		!strings.Contains(err.Error(), "409") || !strings.Contains(err.Error(), "immutable") {
		t.Fatalf("second binary for agent 1.4.0 linux-arm64: %v", err)
	}

	out, err = list("--json")
	var agents []agentInfo
	if err != nil || json.Unmarshal([]byte(out), &agents) != nil || len(agents) != 2 {
		t.Fatalf("agent list: %v %q", err, out)
	}
	if a := agents[1]; a.Arch != "armv7" || a.Digest != trust.Digest([]byte(armv7)) || a.MinAgentVersion != "1.2" || a.TargetsVersion != 5 {
		t.Fatalf("armv7 release = %+v", a)
	}
	if out, err := list(); err != nil || !strings.Contains(out, "linux-armv7") || !strings.Contains(out, "1.2") {
		t.Fatalf("agent list table: %v %q", err, out)
	}

	// The device side: verify the repository from root.json, look up the
	// binary for its platform, download it by digest and check it.
	root, err := os.ReadFile(filepath.Join(dir, rootJSONFile))
	if err != nil {
		t.Fatal(err)
	}
	c := &client{base: server}
	tc, err := tuf.NewClient(tuf.ClientOptions{Root: root, Store: &tuf.MemoryStore{}, Fetcher: httpFetcher{c}})
	if err != nil {
		t.Fatal(err)
	}
	if err := tc.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	tg, err := tc.Agent("1.4.0", "linux", tuf.AgentArch("arm", "7"), "1.3.0")
	if err != nil {
		t.Fatal(err)
	}
	if err := tg.VerifyArtifact(download(t, c, tg.Digest)); err != nil {
		t.Fatalf("downloaded armv7 binary: %v", err)
	}
	if tg, err := tc.Agent("1.4.0", "linux", "arm64", "1.0.0"); err != nil || tg.VerifyArtifact([]byte(arm64)) != nil {
		t.Fatalf("arm64 release: %v", err)
	}
	for _, v := range []string{"1", "2"} {
		if _, err := tc.Model("demo", v, "", "1.0.0"); err != nil {
			t.Fatalf("model demo:%s lost by agent pushes: %v", v, err)
		}
	}
	_, err = tc.Agent("1.4.0", "linux", "armv7", "1.1.0")
	if !errors.Is(err, trust.ErrAgentVersion) {
		t.Fatalf("agent 1.1.0 installing a release that needs 1.2: %v", err)
	}
	_, err = tc.Agent("1.5.0", "linux", "arm64", "1.4.0")
	if trust.Check(err) != "unknown-target" {
		t.Fatalf("release never pushed: %v", err)
	}
}

func download(t *testing.T, c *client, digest string) []byte {
	t.Helper()
	req, err := http.NewRequest("GET", c.base+"/api/v1/artifacts/"+digest, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := apiToken()
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("download %s = %d %v %.200s", digest, resp.StatusCode, err, b)
	}
	return b
}

func TestAgentPushUsage(t *testing.T) {
	for _, args := range [][]string{
		{"agent", "push", "--arch", "arm64", "--file", "a"},
		{"agent", "push", "--version", "1.0.0", "--file", "a"},
		{"agent", "push", "--version", "1.0.0", "--arch", "arm64"},
		{"agent", "push", "--version", "1.0.0", "--arch", "arm", "--file", "a"},
		{"agent", "push", "--version", "1.0.0", "--arch", "arm", "--arm", "8", "--file", "a"},
		{"agent", "push", "--version", "1.0.0", "--arch", "arm64", "--arm", "7", "--file", "a"},
		{"agent", "push", "--version", "1.0.0", "--os", "Linux", "--arch", "arm64", "--file", "a"},
		{"agent", "push", "--version", "../1", "--arch", "arm64", "--file", "a"},
		{"agent", "push", "--version", "1.0.0", "--arch", "arm64", "--file", "a", "--expires", "0s"},
		{"agent", "list", "extra"},
	} {
		if err := run(context.Background(), args, &bytes.Buffer{}); !errors.Is(err, errUsage) {
			t.Errorf("run(%q) = %v, want a usage error", args, err)
		}
	}
}
