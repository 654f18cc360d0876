package serve

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestDocExamples runs every ```sh block of docs/local-api.md, as written
// but for the socket path, against a server with the demo model: each must
// exit 0 and print no error.
func TestDocExamples(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatalf("curl is needed (make test-deps installs it): %v", err)
	}
	doc, err := os.ReadFile("../../docs/local-api.md")
	if err != nil {
		t.Fatal(err)
	}
	reg := NewRegistry()
	loadDemo(t, reg, "1")
	_, sock := startServer(t, reg, Options{})
	var blocks []string
	for _, part := range strings.Split(string(doc), "```sh\n")[1:] {
		blocks = append(blocks, part[:strings.Index(part, "```")])
	}
	if len(blocks) < 5 {
		t.Fatalf("found %d sh examples, want at least 5", len(blocks))
	}
	tmp := t.TempDir()
	for i, b := range blocks {
		script := strings.ReplaceAll(b, "/tmp/", tmp+"/")
		script = strings.ReplaceAll(script, "/var/lib/starling/agent.sock", sock)
		out, err := exec.Command("bash", "-euo", "pipefail", "-c", script).CombinedOutput()
		if err != nil || strings.Contains(string(out), `"error"`) || len(out) == 0 {
			t.Errorf("example %d:\n%s\nfailed: %v\n%s", i+1, b, err, out)
		}
	}
}
