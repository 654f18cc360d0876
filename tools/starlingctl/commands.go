package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/starling-edge/starling/shared/trust"
	"github.com/starling-edge/starling/shared/trust/tuf"
	"github.com/starling-edge/starling/shared/wire"
)

func defaultKeyDir() string {
	if d := os.Getenv("STARLING_KEYS"); d != "" {
		return d
	}
	if d, err := os.UserConfigDir(); err == nil {
		return filepath.Join(d, "starling", "keys")
	}
	return "starling-keys"
}

func defaultServer() string {
	if s := os.Getenv("STARLING_SERVER"); s != "" {
		return s
	}
	return "http://127.0.0.1:8080"
}

func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("starlingctl "+name, flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	return fs
}

// parse parses flags and rejects stray positional arguments beyond max.
func parse(fs *flag.FlagSet, args []string, max int) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > max {
		return fmt.Errorf("%w: %s: unexpected argument %q", errUsage, fs.Name(), fs.Arg(max))
	}
	return nil
}

// pushFlags are the flags model push and agent push share.
type pushFlags struct {
	server, dir, keyPath, minAgent, file *string
	expires                              *time.Duration
}

func addPushFlags(fs *flag.FlagSet, what string) pushFlags {
	return pushFlags{
		server:   fs.String("server", defaultServer(), "control plane URL (env STARLING_SERVER)"),
		dir:      fs.String("dir", defaultKeyDir(), "key directory with root.json (env STARLING_KEYS)"),
		keyPath:  fs.String("key", "", "targets private key file; default DIR/targets.key"),
		minAgent: fs.String("min-agent-version", "", "oldest agent version that may "+what),
		file:     fs.String("file", "", "artifact file (required)"),
		expires:  fs.Duration("expires", tuf.DefaultTargetsExpiry, "how long the signed targets metadata stays valid"),
	}
}

// check reports a usage error for a missing --file or a bad --expires.
func (f pushFlags) check(cmd string) error {
	if *f.file == "" {
		return fmt.Errorf("%w: %s: --file is required", errUsage, cmd)
	}
	if *f.expires <= 0 {
		return fmt.Errorf("%w: %s: --expires must be positive, got %s", errUsage, cmd, *f.expires)
	}
	return nil
}

// pushed is what signAndPush did.
type pushed struct {
	path           string
	targetsVersion int64
	keyID          string
}

// signAndPush signs the next targets version with the target at path
// (custom fields c, the bytes of --file) on top of the repository's
// verified current targets, and uploads the three to endpoint, decoding
// the answer into out. It is model push and agent push but for the target.
func signAndPush(ctx context.Context, f pushFlags, endpoint, path string, c tuf.Custom, out any) (*pushed, error) {
	keyPath := *f.keyPath
	if keyPath == "" {
		keyPath = filepath.Join(*f.dir, targetsKeyFile)
	}
	key, err := trust.ReadPrivateKey(keyPath)
	if err != nil {
		return nil, err
	}
	art, err := os.ReadFile(*f.file)
	if err != nil {
		return nil, err
	}
	cl := &client{base: *f.server}
	targets, err := currentTargets(ctx, cl, *f.dir)
	if err != nil {
		return nil, err
	}
	targets.Signed.Version++
	targets.Signed.Expires = time.Now().Add(*f.expires).UTC().Truncate(time.Second)
	if err := tuf.SetTarget(targets, path, int64(len(art)), trust.Digest(art), c); err != nil {
		return nil, err
	}
	signed, err := tuf.Sign(targets, key)
	if err != nil {
		return nil, err
	}
	if err := cl.pushTarget(ctx, endpoint, signed, path, art, out); err != nil {
		return nil, err
	}
	return &pushed{path: path, targetsVersion: targets.Signed.Version, keyID: tuf.KeyID(key.Public())}, nil
}

func modelPush(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlags("model push")
	pf := addPushFlags(fs, "run it")
	variant := fs.String("variant", "", "artifact variant (e.g. int8); default none")
	name := fs.String("name", "", "model name (required)")
	version := fs.String("version", "", "model version (required)")
	format := fs.String("format", "", "artifact format; default from the file extension (.tflite -> tflite)")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	for _, f := range []struct{ flag, val string }{{"name", *name}, {"version", *version}} {
		if f.val == "" {
			return fmt.Errorf("%w: model push: --%s is required", errUsage, f.flag)
		}
	}
	if err := pf.check("model push"); err != nil {
		return err
	}
	if *format == "" {
		*format = strings.TrimPrefix(filepath.Ext(*pf.file), ".")
		if *format == "" {
			return fmt.Errorf("%w: model push: cannot tell the format of %s; pass --format", errUsage, *pf.file)
		}
	}
	var res modelInfo
	p, err := signAndPush(ctx, pf, "/api/v1/models", tuf.ModelPath(*name, *version, *variant), tuf.Custom{Kind: tuf.KindModel, Name: *name, Version: *version,
		Variant: *variant, Format: *format, MinAgentVersion: *pf.minAgent}, &res)
	if err != nil {
		return fmt.Errorf("model push %s:%s: %w", *name, *version, err)
	}
	fmt.Fprintf(out, "pushed %s:%s %s (%d bytes) as target %s in targets version %d, signed by %.16s, expires %s\n",
		res.Name, res.Version, res.Digest, res.Size, p.path, p.targetsVersion, p.keyID, res.Expires.Format(time.RFC3339))
	return nil
}

type modelInfo struct {
	Name    string    `json:"name"`
	Version string    `json:"version"`
	Format  string    `json:"format"`
	Digest  string    `json:"digest"`
	Size    int64     `json:"size"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
}

type deviceInfo struct {
	ID       string             `json:"id"`
	Status   string             `json:"status"`
	LastSeen time.Time          `json:"last_seen"`
	Reported wire.ReportedState `json:"reported"`
	Desired  wire.DesiredState  `json:"desired"`
}

func modelList(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlags("model list")
	server := fs.String("server", defaultServer(), "control plane URL (env STARLING_SERVER)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	var models []modelInfo
	if err := (&client{base: *server}).get(ctx, "/api/v1/models", &models); err != nil {
		return fmt.Errorf("model list: %w", err)
	}
	if *asJSON {
		return printJSON(out, models)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tVERSION\tFORMAT\tSIZE\tDIGEST\tEXPIRES")
	for _, m := range models {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%.19s\t%s\n", m.Name, m.Version, m.Format, m.Size, m.Digest, m.Expires.Format(time.RFC3339))
	}
	return tw.Flush()
}

func deviceList(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlags("device list")
	server := fs.String("server", defaultServer(), "control plane URL (env STARLING_SERVER)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, args, 0); err != nil {
		return err
	}
	var devices []deviceInfo
	if err := (&client{base: *server}).get(ctx, "/api/v1/devices", &devices); err != nil {
		return fmt.Errorf("device list: %w", err)
	}
	if *asJSON {
		return printJSON(out, devices)
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tSTATUS\tARCH\tENGINES\tMODELS\tLAST SEEN")
	for _, d := range devices {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", d.ID, d.Status, d.Reported.Arch,
			strings.Join(d.Reported.Engines, ","), modelSummary(d.Reported.Models), d.LastSeen.Format(time.RFC3339))
	}
	return tw.Flush()
}

func modelSummary(ms []wire.ModelStatus) string {
	if len(ms) == 0 {
		return "-"
	}
	parts := make([]string, 0, len(ms))
	for _, m := range ms {
		parts = append(parts, m.Name+":"+m.Version+"="+m.State)
	}
	return strings.Join(parts, ",")
}

func deviceShow(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlags("device show")
	server := fs.String("server", defaultServer(), "control plane URL (env STARLING_SERVER)")
	id, err := parseWithID(fs, args)
	if err != nil {
		return err
	}
	c := &client{base: *server}
	var dev json.RawMessage
	if err := c.get(ctx, "/api/v1/devices/"+url.PathEscape(id), &dev); err != nil {
		return fmt.Errorf("device show %s: %w", id, err)
	}
	var events json.RawMessage
	if err := c.get(ctx, "/api/v1/devices/"+url.PathEscape(id)+"/events", &events); err != nil {
		return fmt.Errorf("device show %s: %w", id, err)
	}
	return printJSON(out, map[string]json.RawMessage{"device": dev, "events": events})
}

func deviceAssign(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlags("device assign")
	server := fs.String("server", defaultServer(), "control plane URL (env STARLING_SERVER)")
	var models modelRefs
	fs.Var(&models, "model", "NAME:VERSION to serve; repeat for several models (required)")
	id, err := parseWithID(fs, args)
	if err != nil {
		return err
	}
	if len(models) == 0 {
		return fmt.Errorf("%w: device assign: at least one --model NAME:VERSION is required", errUsage)
	}
	var desired wire.DesiredState
	body := map[string]any{"models": models}
	if err := (&client{base: *server}).do(ctx, "PUT", "/api/v1/devices/"+url.PathEscape(id)+"/desired", body, &desired); err != nil {
		return fmt.Errorf("device assign %s: %w", id, err)
	}
	names := make([]string, 0, len(desired.Models))
	for _, m := range desired.Models {
		names = append(names, m.Name+":"+m.Version)
	}
	fmt.Fprintf(out, "device %s desired generation %d: %s\n", id, desired.Generation, strings.Join(names, ", "))
	return nil
}

type modelRef struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

// modelRefs is a repeatable NAME:VERSION flag.
type modelRefs []modelRef

func (m *modelRefs) String() string { return fmt.Sprint(*m) }

func (m *modelRefs) Set(s string) error {
	name, version, ok := strings.Cut(s, ":")
	if !ok || name == "" || version == "" {
		return fmt.Errorf("%q is not NAME:VERSION", s)
	}
	*m = append(*m, modelRef{Name: name, Version: version})
	return nil
}

// parseWithID parses a command that takes one DEVICE argument, which may
// stand anywhere among the flags.
func parseWithID(fs *flag.FlagSet, args []string) (string, error) {
	var ids []string
	for {
		if err := parse(fs, args, len(args)); err != nil {
			return "", err
		}
		if fs.NArg() == 0 {
			break
		}
		ids = append(ids, fs.Arg(0))
		args = fs.Args()[1:]
	}
	switch len(ids) {
	case 1:
		return ids[0], nil
	case 0:
		return "", fmt.Errorf("%w: %s DEVICE [flags]", errUsage, fs.Name())
	}
	return "", fmt.Errorf("%w: %s takes one device, got %q", errUsage, fs.Name(), ids)
}

func printJSON(out io.Writer, v any) error {
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
