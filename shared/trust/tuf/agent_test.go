package tuf

import (
	"context"
	"errors"
	"testing"

	"github.com/starling-edge/starling/shared/trust"
)

// publishAgent adds an agent binary target and publishes a new repository
// version; it returns the binary.
func (r *testRepo) publishAgent(version, goos, arch, minAgent string) []byte {
	data := []byte("agent binary " + version + " " + goos + "-" + arch)
	r.targetsMD[AgentPath(version, goos, arch)] = entry{data, AgentCustom(version, goos, arch, minAgent)}
	r.signTargets(r.targets...)
	r.online(r.targetsVersion, r.snap[0], r.ts[0])
	return data
}

func TestAgentArch(t *testing.T) {
	for _, tt := range []struct{ goarch, goarm, want string }{
		{"arm64", "", "arm64"},
		{"amd64", "7", "amd64"},
		{"arm", "7", "armv7"},
		{"arm", "6", "armv6"},
		{"arm", "", "arm"},
	} {
		if got := AgentArch(tt.goarch, tt.goarm); got != tt.want {
			t.Errorf("AgentArch(%q, %q) = %q, want %q", tt.goarch, tt.goarm, got, tt.want)
		}
	}
}

// TestFindAgent: a device finds the agent binary signed for its platform
// and verifies its bytes; anything else is refused with the failed check.
func TestFindAgent(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t)
	r.publish("demo", "1")
	bin := r.publishAgent("1.4.0", "linux", "arm64", "")
	armBin := r.publishAgent("1.4.0", "linux", "armv7", "1.2")
	// A model signed at an agent path, and an agent whose custom fields
	// name another platform than its path: neither is an agent for it.
	r.targetsMD[AgentPath("1.5.0", "linux", "arm64")] = entry{[]byte("m"), Custom{Kind: KindModel, Name: "demo", Version: "1.5.0", Format: "tflite"}}
	r.targetsMD[AgentPath("1.6.0", "linux", "arm64")] = entry{[]byte("a"), AgentCustom("1.6.0", "linux", "amd64", "")}
	r.signTargets(r.targets...)
	r.online(r.targetsVersion, r.snap[0], r.ts[0])

	d := r.device()
	if _, err := d.c.Agent("1.4.0", "linux", "arm64", "1.0.0"); !errors.Is(err, trust.ErrNoTarget) {
		t.Fatalf("lookup before any refresh: %v", err)
	}
	if err := d.c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	tg, err := d.c.Agent("1.4.0", "linux", "arm64", "1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	c := tg.Custom
	if tg.Path != "agent/1.4.0/linux-arm64" || c.Kind != KindAgent || c.Name != AgentName || c.OS != "linux" || c.Arch != "arm64" ||
		tg.Length != int64(len(bin)) || tg.Digest != trust.Digest(bin) || tg.TargetsVersion != r.targetsVersion {
		t.Fatalf("target = %+v", tg)
	}
	if err := tg.VerifyArtifact(bin); err != nil {
		t.Fatalf("signed binary: %v", err)
	}
	// Arbitrary bytes: other bytes of the same length, or one more byte.
	evil := append([]byte(nil), bin...)
	evil[len(evil)-1] ^= 1
	wantCheck(t, tg.VerifyArtifact(evil), trust.ErrDigest, "digest")
	wantCheck(t, tg.VerifyArtifact(append(bin, 0)), trust.ErrSize, "size")
	wantCheck(t, tg.VerifyArtifact(armBin), trust.ErrDigest, "digest") // another platform's binary

	refusals := []struct {
		name                          string
		version, goos, arch, agentVer string
		sentinel                      error
		check                         string
	}{
		{"version never signed", "9.9.9", "linux", "arm64", "1.0.0", trust.ErrNoTarget, "unknown-target"},
		{"platform never signed", "1.4.0", "linux", "amd64", "1.0.0", trust.ErrNoTarget, "unknown-target"},
		{"arm version never signed", "1.4.0", "linux", "armv6", "1.0.0", trust.ErrNoTarget, "unknown-target"},
		{"model at an agent path", "1.5.0", "linux", "arm64", "1.0.0", trust.ErrNoTarget, "unknown-target"},
		{"custom fields for another platform", "1.6.0", "linux", "arm64", "1.0.0", trust.ErrNoTarget, "unknown-target"},
		{"agent too old to install it", "1.4.0", "linux", "armv7", "1.1.9", trust.ErrAgentVersion, "agent-version"},
	}
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			_, err := d.c.Agent(tt.version, tt.goos, tt.arch, tt.agentVer)
			wantCheck(t, err, tt.sentinel, tt.check)
		})
	}
	if tg, err := d.c.Agent("1.4.0", "linux", "armv7", "1.2.0"); err != nil || tg.VerifyArtifact(armBin) != nil {
		t.Fatalf("armv7 binary for agent 1.2.0: %v", err)
	}
	// Agent targets are not models, and model lookups do not see them.
	_, err = d.c.Model("demo", "1.5.0", "", "1.0.0")
	wantCheck(t, err, trust.ErrNoTarget, "unknown-target")

	md, err := ParseTargets(r.serve.Get("4.targets.json"))
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, a := range Agents(md) {
		paths = append(paths, a.Path)
	}
	if len(paths) != 2 || paths[0] != "agent/1.4.0/linux-arm64" || paths[1] != "agent/1.4.0/linux-armv7" {
		t.Fatalf("Agents = %q, want the two well-formed agent targets", paths)
	}
}

func TestCheckAgentCustom(t *testing.T) {
	good := AgentCustom("1.4.0", "linux", "armv7", "")
	if err := CheckAgentCustom(AgentPath("1.4.0", "linux", "armv7"), good); err != nil {
		t.Fatal(err)
	}
	edit := func(f func(*Custom)) Custom { c := good; f(&c); return c }
	for _, tt := range []struct {
		name string
		path string
		c    Custom
	}{
		{"model kind", AgentPath("1.4.0", "linux", "armv7"), edit(func(c *Custom) { c.Kind = KindModel })},
		{"other name", AgentPath("1.4.0", "linux", "armv7"), edit(func(c *Custom) { c.Name = "demo" })},
		{"path-like version", AgentPath("../1", "linux", "armv7"), edit(func(c *Custom) { c.Version = "../1" })},
		{"empty arch", AgentPath("1.4.0", "linux", ""), edit(func(c *Custom) { c.Arch = "" })},
		{"upper-case os", AgentPath("1.4.0", "Linux", "armv7"), edit(func(c *Custom) { c.OS = "Linux" })},
		{"path of another platform", AgentPath("1.4.0", "linux", "arm64"), good},
	} {
		if err := CheckAgentCustom(tt.path, tt.c); !errors.Is(err, trust.ErrMalformed) {
			t.Errorf("%s: err = %v, want malformed", tt.name, err)
		}
	}
}
