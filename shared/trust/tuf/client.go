package tuf

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/trustedmetadata"

	"github.com/starling-edge/starling/shared/trust"
)

// Fetcher reads metadata files from a repository by name ("timestamp.json",
// "4.root.json", "7.snapshot.json", "12.targets.json"). It returns an error
// wrapping ErrNotFound when the repository has no such file, and never
// more than maxLen bytes (ErrTooLarge past that).
type Fetcher interface {
	FetchMetadata(ctx context.Context, name string, maxLen int64) ([]byte, error)
}

// Store keeps a device's trusted metadata across restarts, one blob per
// role. Load returns nil, nil when nothing is stored.
type Store interface {
	LoadMetadata(role string) ([]byte, error)
	StoreMetadata(role string, data []byte) error
	DeleteMetadata(role string) error
}

// ClientOptions configure a Client. Root, Store and Fetcher are required.
type ClientOptions struct {
	// Root is the bootstrap root metadata (root.json installed with the
	// device). It is used only while Store holds no root.
	Root []byte
	// Store persists trusted metadata (the agent's bbolt cache).
	Store Store
	// Fetcher reads the repository (over MQTT or HTTP).
	Fetcher Fetcher
	// Now is the clock for expiry checks; default time.Now.
	Now func() time.Time
	// MaxRootRotations bounds the root versions walked in one refresh;
	// default 32, as go-tuf's updater.
	MaxRootRotations int
	// AllowExpiredTargets trusts targets metadata that passes every check
	// but expiry. IMPORTANT: for the operator's signing tool only, which
	// must sign the next targets version on top of an expired one; a
	// device never sets it (expired targets are refused with the expiry
	// check). Default false.
	AllowExpiredTargets bool
}

// Client runs the TUF client workflow (specification section 5) against a
// repository and keeps the result. Refresh and the lookups are safe for
// concurrent use; refreshes run one at a time.
type Client struct {
	opts ClientOptions

	refreshMu sync.Mutex // one Refresh at a time

	mu      sync.Mutex
	targets *metadata.Metadata[metadata.TargetsType] // verified by the last good refresh
	root    *metadata.Metadata[metadata.RootType]
	version Versions
}

// Versions are the versions of the trusted metadata after a refresh.
type Versions struct {
	Root, Timestamp, Snapshot, Targets int64
}

// NewClient checks opts and the trusted root (the stored one, else the
// bootstrap one). Nothing is fetched until Refresh.
func NewClient(opts ClientOptions) (*Client, error) {
	if opts.Store == nil || opts.Fetcher == nil {
		return nil, fmt.Errorf("tuf.NewClient: Store and Fetcher are required: %w", ErrOptions)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxRootRotations <= 0 {
		opts.MaxRootRotations = 32
	}
	c := &Client{opts: opts}
	root, err := c.trustedRoot()
	if err != nil {
		return nil, err
	}
	if _, err := trustedmetadata.New(root); err != nil {
		return nil, fmt.Errorf("tuf.NewClient: trusted root: %w", classify(RoleRoot, nil, root, err))
	}
	return c, nil
}

func (c *Client) trustedRoot() ([]byte, error) {
	root, err := c.opts.Store.LoadMetadata(RoleRoot)
	if err != nil {
		return nil, fmt.Errorf("tuf: load trusted root: %w", err)
	}
	if root == nil {
		root = c.opts.Root
	}
	if len(root) == 0 {
		return nil, fmt.Errorf("tuf: no trusted root: install the operator's root.json on the device: %w", ErrOptions)
	}
	return root, nil
}

// Versions returns the versions the last successful Refresh verified.
func (c *Client) Versions() Versions {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.version
}

// Refresh brings the trusted metadata up to date: every new root version
// one at a time, then timestamp, snapshot and targets, each verified
// against the role above it and stored once verified. On failure what was
// trusted before stays trusted, and the error wraps the trust sentinel of
// the failed check.
func (c *Client) Refresh(ctx context.Context) error {
	c.refreshMu.Lock()
	defer c.refreshMu.Unlock()
	rootData, err := c.trustedRoot()
	if err != nil {
		return err
	}
	tm, err := trustedmetadata.New(rootData)
	if err != nil {
		return fmt.Errorf("tuf: trusted root: %w", classify(RoleRoot, nil, rootData, err))
	}
	now := c.opts.Now().UTC()
	tm.RefTime = now
	if err := c.updateRoot(ctx, tm); err != nil {
		return err
	}
	if tm.Root.Signed.IsExpired(now) {
		return fmt.Errorf("tuf: root version %d expired at %s; the operator must sign a new root (starlingctl keys rotate): %w",
			tm.Root.Signed.Version, tm.Root.Signed.Expires.Format(time.RFC3339), trust.ErrExpired)
	}
	if err := c.updateTimestamp(ctx, tm); err != nil {
		return err
	}
	if err := c.updateSnapshot(ctx, tm); err != nil {
		return err
	}
	if err := c.updateTargets(ctx, tm); err != nil {
		return err
	}
	c.mu.Lock()
	c.root, c.targets = tm.Root, tm.Targets[RoleTargets]
	c.version = Versions{Root: tm.Root.Signed.Version, Timestamp: tm.Timestamp.Signed.Version,
		Snapshot: tm.Snapshot.Signed.Version, Targets: tm.Targets[RoleTargets].Signed.Version}
	c.mu.Unlock()
	return nil
}

// updateRoot follows root rotations one version at a time (5.3).
func (c *Client) updateRoot(ctx context.Context, tm *trustedmetadata.TrustedMetadata) error {
	for range c.opts.MaxRootRotations {
		next := tm.Root.Signed.Version + 1
		name := fmt.Sprintf("%d.root.json", next)
		data, err := c.opts.Fetcher.FetchMetadata(ctx, name, MaxRootSize)
		if errors.Is(err, ErrNotFound) {
			break
		}
		if err != nil {
			return fmt.Errorf("tuf: fetch %s: %w", name, err)
		}
		prev := tm.Root
		if _, err := tm.UpdateRoot(data); err != nil {
			return fmt.Errorf("tuf: root version %d: %w", next, classify(RoleRoot, prev, data, err))
		}
		if err := c.opts.Store.StoreMetadata(RoleRoot, data); err != nil {
			return fmt.Errorf("tuf: store root version %d: %w", next, err)
		}
	}
	// New root keys may have replaced the online ones: the stored
	// timestamp and snapshot are checked again below, and dropped if they
	// no longer verify (fast-forward attack recovery, 5.3.11).
	return nil
}

// updateTimestamp loads the stored timestamp (for rollback protection
// only), then the repository's.
func (c *Client) updateTimestamp(ctx context.Context, tm *trustedmetadata.TrustedMetadata) error {
	if old, err := c.opts.Store.LoadMetadata(RoleTimestamp); err != nil {
		return fmt.Errorf("tuf: load trusted timestamp: %w", err)
	} else if old != nil {
		if _, err := tm.UpdateTimestamp(old); err != nil && !errors.As(err, new(*metadata.ErrExpiredMetadata)) {
			// Not verifiable under the current root (its key was rotated):
			// forget it and the snapshot it named.
			tm.Timestamp = nil
			c.forget(RoleTimestamp, RoleSnapshot)
		}
	}
	data, err := c.opts.Fetcher.FetchMetadata(ctx, "timestamp.json", MaxTimestampSize)
	if err != nil {
		return fmt.Errorf("tuf: fetch timestamp.json: %w", err)
	}
	trustedVersion := int64(0)
	if tm.Timestamp != nil {
		trustedVersion = tm.Timestamp.Signed.Version
	}
	_, err = tm.UpdateTimestamp(data)
	switch {
	case errors.As(err, new(*metadata.ErrEqualVersionNumber)):
		// The repository offers what is already trusted; it must still
		// be fresh.
		if tm.Timestamp.Signed.IsExpired(tm.RefTime) {
			return fmt.Errorf("tuf: the repository offers timestamp version %d again, which expired at %s; no newer one: %w",
				tm.Timestamp.Signed.Version, tm.Timestamp.Signed.Expires.Format(time.RFC3339), trust.ErrFreeze)
		}
		return nil
	case errors.As(err, new(*metadata.ErrExpiredMetadata)):
		return fmt.Errorf("tuf: timestamp version %d expired at %s; the repository offers nothing fresher: %w",
			tm.Timestamp.Signed.Version, tm.Timestamp.Signed.Expires.Format(time.RFC3339), trust.ErrFreeze)
	case errors.As(err, new(*metadata.ErrBadVersionNumber)):
		return fmt.Errorf("tuf: timestamp rejected: older than trusted version %d: %v: %w", trustedVersion, err, trust.ErrRollback)
	case err != nil:
		return classify(RoleTimestamp, tm.Root, data, err)
	}
	if err := c.opts.Store.StoreMetadata(RoleTimestamp, data); err != nil {
		return fmt.Errorf("tuf: store timestamp: %w", err)
	}
	return nil
}

func (c *Client) forget(roles ...string) {
	for _, r := range roles {
		_ = c.opts.Store.DeleteMetadata(r)
	}
}

// updateSnapshot uses the stored snapshot when the timestamp still names
// it, else fetches the named version; the stored one guards against a
// rollback of the targets version either way.
func (c *Client) updateSnapshot(ctx context.Context, tm *trustedmetadata.TrustedMetadata) error {
	want := tm.Timestamp.Signed.Meta["snapshot.json"].Version
	if old, err := c.opts.Store.LoadMetadata(RoleSnapshot); err != nil {
		return fmt.Errorf("tuf: load trusted snapshot: %w", err)
	} else if old != nil {
		_, err := tm.UpdateSnapshot(old, true)
		switch {
		case err == nil:
			return nil // still current
		case tm.Snapshot == nil:
			c.forget(RoleSnapshot) // no longer verifiable (rotated key)
		}
	}
	name := fmt.Sprintf("%d.snapshot.json", want)
	data, err := c.opts.Fetcher.FetchMetadata(ctx, name, MaxSnapshotSize)
	if err != nil {
		return fmt.Errorf("tuf: fetch %s: %w", name, err)
	}
	if md, perr := ParseSnapshot(data); perr == nil && Verify(tm.Root, RoleSnapshot, md) == nil && md.Signed.Version != want {
		return fmt.Errorf("tuf: %s is snapshot version %d, but timestamp version %d names version %d: %w",
			name, md.Signed.Version, tm.Timestamp.Signed.Version, want, trust.ErrMixAndMatch)
	}
	_, err = tm.UpdateSnapshot(data, false)
	switch {
	case errors.As(err, new(*metadata.ErrBadVersionNumber)):
		return fmt.Errorf("tuf: snapshot version %d rolls back a version trusted before: %v: %w", want, err, trust.ErrRollback)
	case errors.As(err, new(*metadata.ErrLengthOrHashMismatch)):
		return fmt.Errorf("tuf: %s does not match the length or hash timestamp gives: %v: %w", name, err, trust.ErrMixAndMatch)
	case err != nil:
		return classify(RoleSnapshot, tm.Root, data, err)
	}
	if err := c.opts.Store.StoreMetadata(RoleSnapshot, data); err != nil {
		return fmt.Errorf("tuf: store snapshot: %w", err)
	}
	return nil
}

// updateTargets uses the stored targets when the snapshot still names its
// version, else fetches the named version.
func (c *Client) updateTargets(ctx context.Context, tm *trustedmetadata.TrustedMetadata) error {
	want := tm.Snapshot.Signed.Meta["targets.json"].Version
	if old, err := c.opts.Store.LoadMetadata(RoleTargets); err != nil {
		return fmt.Errorf("tuf: load trusted targets: %w", err)
	} else if old != nil {
		if md, perr := ParseTargets(old); perr == nil && md.Signed.Version == want {
			if _, err := tm.UpdateTargets(old); err == nil {
				return nil
			} else if errors.As(err, new(*metadata.ErrExpiredMetadata)) {
				if c.opts.AllowExpiredTargets {
					tm.Targets[RoleTargets] = md
					return nil
				}
				return fmt.Errorf("tuf: targets version %d expired at %s; the operator must sign targets again (starlingctl model push): %w",
					want, md.Signed.Expires.Format(time.RFC3339), trust.ErrExpired)
			}
		}
	}
	name := fmt.Sprintf("%d.targets.json", want)
	data, err := c.opts.Fetcher.FetchMetadata(ctx, name, MaxTargetsSize)
	if err != nil {
		return fmt.Errorf("tuf: fetch %s: %w", name, err)
	}
	_, err = tm.UpdateTargets(data)
	switch {
	case errors.As(err, new(*metadata.ErrBadVersionNumber)):
		return fmt.Errorf("tuf: %s is not the targets version snapshot version %d names: %v: %w",
			name, tm.Snapshot.Signed.Version, err, trust.ErrMixAndMatch)
	case errors.As(err, new(*metadata.ErrLengthOrHashMismatch)):
		return fmt.Errorf("tuf: %s does not match the length or hash snapshot gives: %v: %w", name, err, trust.ErrMixAndMatch)
	case errors.As(err, new(*metadata.ErrExpiredMetadata)):
		md, _ := ParseTargets(data)
		if c.opts.AllowExpiredTargets {
			// go-tuf checks expiry last: everything else verified.
			tm.Targets[RoleTargets] = md
			break
		}
		return fmt.Errorf("tuf: targets version %d expired at %s; the operator must sign targets again (starlingctl model push): %w",
			want, md.Signed.Expires.Format(time.RFC3339), trust.ErrExpired)
	case err != nil:
		return classify(RoleTargets, tm.Root, data, err)
	}
	if err := c.opts.Store.StoreMetadata(RoleTargets, data); err != nil {
		return fmt.Errorf("tuf: store targets: %w", err)
	}
	return nil
}

// classify turns a go-tuf error for role's metadata data into one that
// wraps a trust sentinel. delegator is the root that should have signed it
// (nil for the trusted root itself).
func classify(role string, delegator *metadata.Metadata[metadata.RootType], data []byte, err error) error {
	switch {
	case errors.As(err, new(*metadata.ErrUnsignedMetadata)):
		sigs, self, perr := signaturesOf(role, data)
		if perr != nil {
			return perr
		}
		if delegator == nil {
			delegator = self
		}
		if self != nil && delegator != self && delegator.VerifyDelegate(RoleRoot, self) == nil {
			// A new root that the old root accepted but that does not
			// meet its own threshold: judge it by its own keys.
			return classifySignatures(self, role, sigs, err)
		}
		return classifySignatures(delegator, role, sigs, err)
	case errors.As(err, new(*metadata.ErrBadVersionNumber)):
		return fmt.Errorf("%v: %w", err, trust.ErrRollback)
	case errors.As(err, new(*metadata.ErrExpiredMetadata)):
		return fmt.Errorf("%v: %w", err, trust.ErrExpired)
	case errors.As(err, new(*metadata.ErrLengthOrHashMismatch)):
		return fmt.Errorf("%v: %w", err, trust.ErrMixAndMatch)
	}
	return fmt.Errorf("%s metadata: %v: %w", role, err, trust.ErrMalformed)
}

func signaturesOf(role string, data []byte) ([]metadata.Signature, *metadata.Metadata[metadata.RootType], error) {
	switch role {
	case RoleRoot:
		md, err := metadata.Root().FromBytes(data)
		if err != nil {
			return nil, nil, fmt.Errorf("root metadata: %v: %w", err, trust.ErrMalformed)
		}
		return md.Signatures, md, nil
	case RoleTimestamp:
		md, err := metadata.Timestamp().FromBytes(data)
		if err != nil {
			return nil, nil, fmt.Errorf("timestamp metadata: %v: %w", err, trust.ErrMalformed)
		}
		return md.Signatures, nil, nil
	case RoleSnapshot:
		md, err := metadata.Snapshot().FromBytes(data)
		if err != nil {
			return nil, nil, fmt.Errorf("snapshot metadata: %v: %w", err, trust.ErrMalformed)
		}
		return md.Signatures, nil, nil
	}
	md, err := metadata.Targets().FromBytes(data)
	if err != nil {
		return nil, nil, fmt.Errorf("targets metadata: %v: %w", err, trust.ErrMalformed)
	}
	return md.Signatures, nil, nil
}

// Model looks up a model target in the targets metadata the last
// successful Refresh verified (see FindModel).
func (c *Client) Model(name, version, variant, agentVersion string) (*Target, error) {
	c.mu.Lock()
	targets := c.targets
	c.mu.Unlock()
	if targets == nil {
		return nil, fmt.Errorf("tuf: no verified targets yet (refresh first): %w", trust.ErrNoTarget)
	}
	return FindModel(targets, name, version, variant, agentVersion)
}
