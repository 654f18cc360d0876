package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/starling-edge/starling/shared/trust/tuf"
)

// agentInfo is an agent release as GET /api/v1/agents shows it.
type agentInfo struct {
	Version         string    `json:"version"`
	OS              string    `json:"os"`
	Arch            string    `json:"arch"`
	Digest          string    `json:"digest"`
	Size            int64     `json:"size"`
	MinAgentVersion string    `json:"min_agent_version,omitempty"`
	Target          string    `json:"target"`
	TargetsVersion  int64     `json:"targets_version"`
	Expires         time.Time `json:"expires"`
}

// agentPush signs an agent binary as a target of the next targets version
// and publishes it, exactly as model push does for a model.
func agentPush(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlags("agent push")
	pf := addPushFlags(fs, "install it (older agents must update in steps)")
	version := fs.String("version", "", "agent version (required)")
	goos := fs.String("os", "linux", "GOOS the binary is built for")
	goarch := fs.String("arch", "", "GOARCH the binary is built for: amd64, arm64, arm (required)")
	goarm := fs.String("arm", "", "GOARM of an arm binary: 5, 6 or 7 (required with --arch arm)")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	for _, f := range []struct{ flag, val string }{{"version", *version}, {"arch", *goarch}} {
		if f.val == "" {
			return fmt.Errorf("%w: agent push: --%s is required", errUsage, f.flag)
		}
	}
	switch {
	case *goarch == "arm" && *goarm != "5" && *goarm != "6" && *goarm != "7":
		return fmt.Errorf("%w: agent push: --arch arm needs --arm 5, 6 or 7 (the binary's GOARM), got %q", errUsage, *goarm)
	case *goarch != "arm" && *goarm != "":
		return fmt.Errorf("%w: agent push: --arm is only for --arch arm", errUsage)
	}
	if err := pf.check("agent push"); err != nil {
		return err
	}
	arch := tuf.AgentArch(*goarch, *goarm)
	c := tuf.AgentCustom(*version, *goos, arch, *pf.minAgent)
	path := tuf.AgentPath(*version, *goos, arch)
	if err := tuf.CheckAgentCustom(path, c); err != nil {
		return fmt.Errorf("%w: agent push: %v", errUsage, err)
	}
	var res agentInfo
	p, err := signAndPush(ctx, pf, "/api/v1/agents", path, c, &res)
	if err != nil {
		return fmt.Errorf("agent push %s %s-%s: %w", *version, *goos, arch, err)
	}
	fmt.Fprintf(out, "pushed agent %s for %s-%s %s (%d bytes) as target %s in targets version %d, signed by %.16s, expires %s\n",
		res.Version, res.OS, res.Arch, res.Digest, res.Size, p.path, p.targetsVersion, p.keyID, res.Expires.Format(time.RFC3339))
	return nil
}

func agentList(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlags("agent list")
	server := fs.String("server", defaultServer(), "control plane URL (env STARLING_SERVER)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	var agents []agentInfo
	if err := (&client{base: *server}).get(ctx, "/api/v1/agents", &agents); err != nil {
		return fmt.Errorf("agent list: %w", err)
	}
	if *asJSON {
		return printJSON(out, agents)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VERSION\tPLATFORM\tSIZE\tDIGEST\tMIN AGENT\tEXPIRES")
	for _, a := range agents {
		minAgent := a.MinAgentVersion
		if minAgent == "" {
			minAgent = "-"
		}
		fmt.Fprintf(tw, "%s\t%s-%s\t%d\t%.19s\t%s\t%s\n", a.Version, a.OS, a.Arch, a.Size, a.Digest, minAgent, a.Expires.Format(time.RFC3339))
	}
	return tw.Flush()
}
