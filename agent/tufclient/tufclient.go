// Package tufclient is the agent's TUF client: it keeps the device's trusted
// update metadata in the agent's bbolt cache, refreshes it from the control
// plane (over MQTT through the uplink, or over HTTP from the control plane's
// REST API where configured), and verifies each desired model against the
// operator-signed targets (hashes, length, name, version, variant, minimum
// agent version) before anything is fetched. The workflow itself is
// shared/trust/tuf's Client.
package tufclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/starling-edge/starling/agent/reconcile"
	"github.com/starling-edge/starling/shared/trust"
	"github.com/starling-edge/starling/shared/trust/tuf"
	"github.com/starling-edge/starling/shared/wire"
)

// ErrOptions: a required option is missing or invalid.
var ErrOptions = errors.New("tufclient: invalid options")

// Options configure a Verifier. Root, Store and Fetcher are required.
type Options struct {
	// Root is the bootstrap root.json the device was installed with.
	Root []byte
	// Store keeps trusted metadata (*cache.Cache).
	Store tuf.Store
	// Fetcher reads the repository: *uplink.Session (MQTT) or an
	// HTTPFetcher.
	Fetcher tuf.Fetcher
	// AgentVersion is checked against each target's minimum agent version.
	AgentVersion string
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Verifier implements reconcile.Verifier with TUF.
type Verifier struct {
	c            *tuf.Client
	agentVersion string
}

var _ reconcile.Verifier = (*Verifier)(nil)

// New checks opts and the trusted root.
func New(opts Options) (*Verifier, error) {
	c, err := tuf.NewClient(tuf.ClientOptions{Root: opts.Root, Store: opts.Store, Fetcher: opts.Fetcher, Now: opts.Now})
	if err != nil {
		return nil, fmt.Errorf("tufclient.New: %w", err)
	}
	return &Verifier{c: c, agentVersion: opts.AgentVersion}, nil
}

// Refresh updates the trusted metadata (tuf.Client.Refresh).
func (v *Verifier) Refresh(ctx context.Context) error { return v.c.Refresh(ctx) }

// Versions reports the trusted metadata versions.
func (v *Verifier) Versions() tuf.Versions { return v.c.Versions() }

// Verify looks dm up in the verified targets. The metadata the control
// plane put in dm is ignored: only the operator-signed targets count.
func (v *Verifier) Verify(dm wire.DesiredModel) (*trust.ModelMetadata, []byte, error) {
	t, err := v.c.Model(dm.Name, dm.Version, dm.Variant, v.agentVersion)
	if err != nil {
		return nil, nil, err
	}
	return t.Model(), t.Raw, nil
}

// HTTPFetcher reads metadata from the control plane's REST API
// (GET <Base>/api/v1/tuf/<name>).
type HTTPFetcher struct {
	// Base is the control plane's URL, e.g. http://127.0.0.1:8080.
	Base string
	// Client; default one with a 30s timeout.
	Client *http.Client
}

var _ tuf.Fetcher = (*HTTPFetcher)(nil)

// CheckURL reports whether base is usable as HTTPFetcher.Base.
func CheckURL(base string) error {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("metadata URL %q: want http(s)://host:port: %w", base, ErrOptions)
	}
	return nil
}

// FetchMetadata implements tuf.Fetcher.
func (f *HTTPFetcher) FetchMetadata(ctx context.Context, name string, maxLen int64) ([]byte, error) {
	c := f.Client
	if c == nil {
		c = &http.Client{Timeout: 30 * time.Second}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(f.Base, "/")+"/api/v1/tuf/"+url.PathEscape(name), nil)
	if err != nil {
		return nil, fmt.Errorf("tufclient: %s: %w", name, err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("tufclient: fetch %s: %w", name, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil, fmt.Errorf("tufclient: %s: %w", name, tuf.ErrNotFound)
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("tufclient: fetch %s: control plane answered %s", name, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxLen+1))
	if err != nil {
		return nil, fmt.Errorf("tufclient: fetch %s: %w", name, err)
	}
	if int64(len(b)) > maxLen {
		return nil, fmt.Errorf("tufclient: %s exceeds %d bytes: %w", name, maxLen, tuf.ErrTooLarge)
	}
	return b, nil
}
