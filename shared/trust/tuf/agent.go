package tuf

import (
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/starling-edge/starling/shared/trust"
)

// AgentName is the Custom.Name of every agent binary target.
const AgentName = "starling-agent"

// validPlatform matches an agent target's os and arch ("linux", "arm64",
// "armv7"): they appear in target paths.
var validPlatform = regexp.MustCompile(`^[a-z0-9]{1,32}$`)

// AgentArch is the architecture name of an agent binary: goarch, with the
// ARM version appended for 32-bit ARM ("arm" and "7" give "armv7"), as the
// release directories name it (dist/linux-armv7). goarm is ignored for
// other architectures.
func AgentArch(goarch, goarm string) string {
	if goarch == "arm" && goarm != "" {
		return goarch + "v" + goarm
	}
	return goarch
}

// AgentCustom is the custom part of the agent binary target for version,
// goos and arch (see AgentArch); minAgentVersion is the oldest agent that
// may install it ("" for any).
func AgentCustom(version, goos, arch, minAgentVersion string) Custom {
	return Custom{Kind: KindAgent, Name: AgentName, Version: version, OS: goos, Arch: arch, MinAgentVersion: minAgentVersion}
}

// CheckAgentCustom reports whether c describes an agent binary that may be
// published at path: kind agent, name AgentName, a version and platform
// usable in a path, and path equal to AgentPath of them. Errors wrap
// trust.ErrMalformed.
func CheckAgentCustom(path string, c Custom) error {
	switch {
	case c.Kind != KindAgent:
		return fmt.Errorf("tuf: target %s has kind %q, want %q: %w", path, c.Kind, KindAgent, trust.ErrMalformed)
	case c.Name != AgentName:
		return fmt.Errorf("tuf: agent target %s is named %q, want %q: %w", path, c.Name, AgentName, trust.ErrMalformed)
	case !validVersion.MatchString(c.Version):
		return fmt.Errorf("tuf: agent target %s: version %q is not 1-128 of [A-Za-z0-9._+-] starting with a letter or digit: %w", path, c.Version, trust.ErrMalformed)
	case !validPlatform.MatchString(c.OS) || !validPlatform.MatchString(c.Arch):
		return fmt.Errorf("tuf: agent target %s: os %q and arch %q must be 1-32 of [a-z0-9]: %w", path, c.OS, c.Arch, trust.ErrMalformed)
	case AgentPath(c.Version, c.OS, c.Arch) != path:
		return fmt.Errorf("tuf: target %s describes agent %s for %s-%s, whose path is %s: %w",
			path, c.Version, c.OS, c.Arch, AgentPath(c.Version, c.OS, c.Arch), trust.ErrMalformed)
	}
	return nil
}

// validVersion matches agent versions: they appear in target paths.
var validVersion = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$`)

// FindAgent looks up the agent binary target for version on goos and arch
// (see AgentArch) in verified targets metadata, and checks its custom
// fields against the request and against agentVersion, the version of the
// agent that would install it (MinAgentVersion). It mirrors FindModel;
// errors wrap trust.ErrNoTarget, trust.ErrMalformed or
// trust.ErrAgentVersion. The binary itself is checked with
// Target.VerifyArtifact.
func FindAgent(targets *metadata.Metadata[metadata.TargetsType], version, goos, arch, agentVersion string) (*Target, error) {
	path := AgentPath(version, goos, arch)
	tf := targets.Signed.Targets[path]
	if tf == nil {
		return nil, fmt.Errorf("tuf: targets version %d signs no target %s (agent %s for %s-%s); push it with starlingctl agent push: %w",
			targets.Signed.Version, path, version, goos, arch, trust.ErrNoTarget)
	}
	t, err := targetOf(targets, path, tf)
	if err != nil {
		return nil, err
	}
	c := t.Custom
	if c.Kind != KindAgent || c.Name != AgentName || c.Version != version || c.OS != goos || c.Arch != arch {
		return nil, fmt.Errorf("tuf: target %s is signed as %s %s:%s for %q-%q, not agent %s for %s-%s: %w",
			path, c.Kind, c.Name, c.Version, c.OS, c.Arch, version, goos, arch, trust.ErrNoTarget)
	}
	if !AgentSatisfies(agentVersion, c.MinAgentVersion) {
		return nil, fmt.Errorf("tuf: target %s needs agent %s or newer to install it, this agent is %s: %w", path, c.MinAgentVersion, agentVersion, trust.ErrAgentVersion)
	}
	return t, nil
}

// Agents returns the agent binary targets in targets metadata, ordered by
// path. Targets under the agent/ prefix that are not well-formed agent
// targets are skipped: FindAgent refuses them anyway.
func Agents(targets *metadata.Metadata[metadata.TargetsType]) []*Target {
	var out []*Target
	for path, tf := range targets.Signed.Targets {
		if !strings.HasPrefix(path, "agent/") {
			continue
		}
		t, err := targetOf(targets, path, tf)
		if err != nil || CheckAgentCustom(path, t.Custom) != nil {
			continue
		}
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}

// VerifyArtifact checks an artifact's bytes against the target: size, then
// sha256, as trust.VerifyArtifact does for models. Errors wrap
// trust.ErrSize or trust.ErrDigest.
func (t *Target) VerifyArtifact(data []byte) error {
	if int64(len(data)) != t.Length {
		return fmt.Errorf("trust: target %s artifact is %d bytes, targets metadata says %d: %w", t.Path, len(data), t.Length, trust.ErrSize)
	}
	if got := trust.Digest(data); got != t.Digest {
		return fmt.Errorf("trust: target %s artifact digest %s, targets metadata says %s: %w", t.Path, got, t.Digest, trust.ErrDigest)
	}
	return nil
}

// Agent looks up an agent binary target in the targets metadata the last
// successful Refresh verified (see FindAgent).
func (c *Client) Agent(version, goos, arch, agentVersion string) (*Target, error) {
	c.mu.Lock()
	targets := c.targets
	c.mu.Unlock()
	if targets == nil {
		return nil, fmt.Errorf("tuf: no verified targets yet (refresh first): %w", trust.ErrNoTarget)
	}
	return FindAgent(targets, version, goos, arch, agentVersion)
}
