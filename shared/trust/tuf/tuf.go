// Package tuf is Starling's update metadata, following The Update Framework
// (github.com/theupdateframework/go-tuf/v2) with Ed25519 keys. It holds what
// both sides share: building and signing the four top-level roles (root and
// targets offline with the operator, snapshot and timestamp online in the
// control plane), the target naming and custom fields for model artifacts
// and agent binaries, parsing with size limits, and the client workflow
// (Client) that a device runs to refresh its trusted metadata and look up
// targets. Every rejection wraps a sentinel of the parent trust package, so
// trust.Check names the failed check ("rollback", "freeze", ...).
package tuf

import (
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/starling-edge/starling/shared/trust"
)

// Role names.
const (
	RoleRoot      = metadata.ROOT
	RoleTargets   = metadata.TARGETS
	RoleSnapshot  = metadata.SNAPSHOT
	RoleTimestamp = metadata.TIMESTAMP
)

// Default expiry of each role's metadata. Root and targets are signed
// offline, so they live long; snapshot and timestamp are re-signed by the
// control plane automatically, so they are short: a device that sees no
// fresh timestamp for DefaultTimestampExpiry refuses updates (freeze).
const (
	DefaultRootExpiry      = 365 * 24 * time.Hour
	DefaultTargetsExpiry   = 90 * 24 * time.Hour
	DefaultSnapshotExpiry  = 7 * 24 * time.Hour
	DefaultTimestampExpiry = 24 * time.Hour
)

// Size limits per role, as go-tuf's updater uses them: a fetcher never
// reads more, so a hostile repository cannot exhaust a device's memory.
const (
	MaxRootSize      = 512 << 10
	MaxTimestampSize = 16 << 10
	MaxSnapshotSize  = 2 << 20
	MaxTargetsSize   = 8 << 20
)

// MaxSize returns the size limit for a metadata file name such as
// "3.root.json", "timestamp.json" or "7.targets.json".
func MaxSize(name string) int64 {
	switch {
	case strings.HasSuffix(name, "root.json"):
		return MaxRootSize
	case strings.HasSuffix(name, "timestamp.json"):
		return MaxTimestampSize
	case strings.HasSuffix(name, "snapshot.json"):
		return MaxSnapshotSize
	}
	return MaxTargetsSize
}

// ValidFileName reports whether name is a metadata file name a repository
// serves: "timestamp.json" or "<version>.<role>.json" for root, snapshot
// and targets.
func ValidFileName(name string) bool {
	if name == "timestamp.json" {
		return true
	}
	v, rest, ok := strings.Cut(name, ".")
	if !ok {
		return false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 1 || strconv.FormatInt(n, 10) != v {
		return false
	}
	return rest == "root.json" || rest == "snapshot.json" || rest == "targets.json"
}

// Key returns the TUF form of an Ed25519 public key.
func Key(pub ed25519.PublicKey) *metadata.Key {
	return &metadata.Key{
		Type:   metadata.KeyTypeEd25519,
		Scheme: metadata.KeySchemeEd25519,
		Value:  metadata.KeyVal{PublicKey: hex.EncodeToString(pub)},
	}
}

// KeyID returns the TUF key id of an Ed25519 public key (sha256 of the
// key's canonical JSON; it differs from trust.KeyID).
func KeyID(pub ed25519.PublicKey) string {
	id, err := Key(pub).ID()
	if err != nil {
		panic("tuf: canonical encoding of an ed25519 key failed: " + err.Error())
	}
	return id
}

// RootSpec describes a root metadata version.
type RootSpec struct {
	// Version of the root; default 1. A rotation makes version N+1.
	Version int64
	// Expires; default now + DefaultRootExpiry.
	Expires time.Time
	// Keys per role; each needs at least its threshold of keys.
	Root, Targets, Snapshot, Timestamp []ed25519.PublicKey
	// RootThreshold and TargetsThreshold default to 1. Snapshot and
	// timestamp always have threshold 1 (one online key each).
	RootThreshold, TargetsThreshold int
}

// NewRoot builds (unsigned) root metadata from spec.
func NewRoot(spec RootSpec) (*metadata.Metadata[metadata.RootType], error) {
	if spec.Version == 0 {
		spec.Version = 1
	}
	if spec.Expires.IsZero() {
		spec.Expires = time.Now().Add(DefaultRootExpiry)
	}
	spec.RootThreshold = max(spec.RootThreshold, 1)
	spec.TargetsThreshold = max(spec.TargetsThreshold, 1)
	root := metadata.Root(spec.Expires.UTC().Truncate(time.Second))
	root.Signed.Version = spec.Version
	root.Signed.ConsistentSnapshot = true
	for _, r := range []struct {
		role      string
		keys      []ed25519.PublicKey
		threshold int
	}{
		{RoleRoot, spec.Root, spec.RootThreshold},
		{RoleTargets, spec.Targets, spec.TargetsThreshold},
		{RoleSnapshot, spec.Snapshot, 1},
		{RoleTimestamp, spec.Timestamp, 1},
	} {
		if len(r.keys) < r.threshold {
			return nil, fmt.Errorf("tuf: root: role %s has %d keys, threshold %d: %w", r.role, len(r.keys), r.threshold, ErrOptions)
		}
		for _, k := range r.keys {
			if len(k) != ed25519.PublicKeySize {
				return nil, fmt.Errorf("tuf: root: role %s: key of %d bytes is not ed25519: %w", r.role, len(k), ErrOptions)
			}
			if err := root.Signed.AddKey(Key(k), r.role); err != nil {
				return nil, fmt.Errorf("tuf: root: role %s: %w", r.role, err)
			}
		}
		root.Signed.Roles[r.role].Threshold = r.threshold
	}
	return root, nil
}

// Sign replaces md's signatures with one by each key and returns its
// compact JSON encoding, the bytes a repository serves.
func Sign[T metadata.Roles](md *metadata.Metadata[T], keys ...*trust.PrivateKey) ([]byte, error) {
	md.ClearSignatures()
	for _, k := range keys {
		signer, err := signature.LoadED25519Signer(k.Key)
		if err != nil {
			return nil, fmt.Errorf("tuf: signer for key %.12s: %w", k.ID, err)
		}
		if _, err := md.Sign(signer); err != nil {
			return nil, fmt.Errorf("tuf: sign with key %.12s: %w", k.ID, err)
		}
	}
	b, err := md.ToBytes(false)
	if err != nil {
		return nil, fmt.Errorf("tuf: encode metadata: %w", err)
	}
	return b, nil
}

// Target kinds (Custom.Kind).
const (
	KindModel = "model"
	KindAgent = "agent"
)

// Custom is the custom part of a Starling target: what the artifact is.
// The operator signs it with the target's length and hashes, so a device
// can check that the model it is told to run is the one signed under that
// name, version and variant.
type Custom struct {
	Kind    string `json:"kind"` // KindModel or KindAgent
	Name    string `json:"name"` // model name ("starling-agent" for agents)
	Version string `json:"version"`
	// Variant tells artifacts of one version apart (e.g. "int8",
	// "edgetpu"); "" is the default variant.
	Variant string `json:"variant,omitempty"`
	// Format is the engine format of a model ("tflite").
	Format string `json:"format,omitempty"`
	// OS and Arch of an agent binary.
	OS   string `json:"os,omitempty"`
	Arch string `json:"arch,omitempty"`
	// MinAgentVersion is the oldest agent that may use the target.
	MinAgentVersion string `json:"min_agent_version,omitempty"`
}

// ModelPath is the target path of a model artifact:
// models/<name>/<version>[/<variant>].
func ModelPath(name, version, variant string) string {
	p := "models/" + name + "/" + version
	if variant != "" {
		p += "/" + variant
	}
	return p
}

// AgentPath is the target path of an agent binary:
// agent/<version>/<os>-<arch>.
func AgentPath(version, goos, goarch string) string {
	return "agent/" + version + "/" + goos + "-" + goarch
}

// SetTarget adds or replaces a target in targets metadata. digest is
// "sha256:<64 hex>".
func SetTarget(t *metadata.Metadata[metadata.TargetsType], path string, length int64, digest string, c Custom) error {
	h, ok := strings.CutPrefix(digest, "sha256:")
	raw, err := hex.DecodeString(h)
	if !ok || err != nil || len(raw) != 32 {
		return fmt.Errorf("tuf: target %s: digest %q is not sha256:<64 hex>: %w", path, digest, trust.ErrMalformed)
	}
	if length <= 0 {
		return fmt.Errorf("tuf: target %s: length %d: %w", path, length, trust.ErrMalformed)
	}
	cb, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("tuf: target %s: custom: %w", path, err)
	}
	custom := json.RawMessage(cb)
	tf := metadata.TargetFile()
	tf.Path, tf.Length, tf.Custom = path, length, &custom
	tf.Hashes = metadata.Hashes{"sha256": raw}
	t.Signed.Targets[path] = tf
	return nil
}

// NewTargets builds empty (unsigned) targets metadata.
func NewTargets(version int64, expires time.Time) *metadata.Metadata[metadata.TargetsType] {
	t := metadata.Targets(expires.UTC().Truncate(time.Second))
	t.Signed.Version = version
	return t
}

// NewSnapshot builds (unsigned) snapshot metadata naming targets version
// targetsVersion.
func NewSnapshot(version int64, expires time.Time, targetsVersion int64) *metadata.Metadata[metadata.SnapshotType] {
	s := metadata.Snapshot(expires.UTC().Truncate(time.Second))
	s.Signed.Version = version
	s.Signed.Meta["targets.json"] = metadata.MetaFile(targetsVersion)
	return s
}

// NewTimestamp builds (unsigned) timestamp metadata naming snapshot
// version snapshotVersion.
func NewTimestamp(version int64, expires time.Time, snapshotVersion int64) *metadata.Metadata[metadata.TimestampType] {
	ts := metadata.Timestamp(expires.UTC().Truncate(time.Second))
	ts.Signed.Version = version
	ts.Signed.Meta["snapshot.json"] = metadata.MetaFile(snapshotVersion)
	return ts
}

// parse is the common part of the Parse functions: size limit, JSON, type.
func parse[T metadata.Roles](role string, data []byte, limit int64, from func([]byte) (*metadata.Metadata[T], error)) (*metadata.Metadata[T], error) {
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("tuf: %s metadata is %d bytes, limit %d: %v: %w", role, len(data), limit, ErrTooLarge, trust.ErrMalformed)
	}
	md, err := from(data)
	if err != nil {
		return nil, fmt.Errorf("tuf: %s metadata: %v: %w", role, err, trust.ErrMalformed)
	}
	return md, nil
}

// ParseRoot parses root metadata without verifying it. Errors wrap
// trust.ErrMalformed.
func ParseRoot(data []byte) (*metadata.Metadata[metadata.RootType], error) {
	md, err := parse(RoleRoot, data, MaxRootSize, metadata.Root().FromBytes)
	if err != nil {
		return nil, err
	}
	for _, r := range []string{RoleRoot, RoleTargets, RoleSnapshot, RoleTimestamp} {
		role := md.Signed.Roles[r]
		if role == nil || role.Threshold < 1 || len(role.KeyIDs) < role.Threshold {
			return nil, fmt.Errorf("tuf: root version %d: role %s missing or with fewer keys than its threshold: %w", md.Signed.Version, r, trust.ErrMalformed)
		}
		for _, id := range role.KeyIDs {
			if md.Signed.Keys[id] == nil {
				return nil, fmt.Errorf("tuf: root version %d: role %s names key %.12s, which root does not hold: %w", md.Signed.Version, r, id, trust.ErrMalformed)
			}
		}
	}
	return md, nil
}

// ParseTargets parses targets metadata without verifying it.
func ParseTargets(data []byte) (*metadata.Metadata[metadata.TargetsType], error) {
	return parse(RoleTargets, data, MaxTargetsSize, metadata.Targets().FromBytes)
}

// ParseSnapshot parses snapshot metadata without verifying it.
func ParseSnapshot(data []byte) (*metadata.Metadata[metadata.SnapshotType], error) {
	md, err := parse(RoleSnapshot, data, MaxSnapshotSize, metadata.Snapshot().FromBytes)
	if err == nil && md.Signed.Meta["targets.json"] == nil {
		err = fmt.Errorf("tuf: snapshot version %d names no targets.json: %w", md.Signed.Version, trust.ErrMalformed)
	}
	return md, err
}

// ParseTimestamp parses timestamp metadata without verifying it.
func ParseTimestamp(data []byte) (*metadata.Metadata[metadata.TimestampType], error) {
	md, err := parse(RoleTimestamp, data, MaxTimestampSize, metadata.Timestamp().FromBytes)
	if err == nil && md.Signed.Meta["snapshot.json"] == nil {
		err = fmt.Errorf("tuf: timestamp version %d names no snapshot.json: %w", md.Signed.Version, trust.ErrMalformed)
	}
	return md, err
}

// Verify checks that md carries a threshold of valid signatures by the
// keys root gives role. It names the failure: trust.ErrUnknownKey when no
// signature is by one of those keys, trust.ErrThreshold when too few are,
// trust.ErrSignature when enough are but some do not verify.
func Verify[T metadata.Roles](root *metadata.Metadata[metadata.RootType], role string, md *metadata.Metadata[T]) error {
	err := root.VerifyDelegate(role, md)
	if err == nil {
		return nil
	}
	return classifySignatures(root, role, md.Signatures, err)
}

func classifySignatures(root *metadata.Metadata[metadata.RootType], role string, sigs []metadata.Signature, cause error) error {
	r := root.Signed.Roles[role]
	if r == nil {
		return fmt.Errorf("tuf: root version %d has no role %s: %v: %w", root.Signed.Version, role, cause, trust.ErrMalformed)
	}
	if !errors.As(cause, new(*metadata.ErrUnsignedMetadata)) {
		return fmt.Errorf("tuf: %s: %v: %w", role, cause, trust.ErrMalformed)
	}
	trusted := map[string]bool{}
	for _, id := range r.KeyIDs {
		trusted[id] = true
	}
	known := map[string]bool{}
	var firstUnknown string
	for _, s := range sigs {
		if trusted[s.KeyID] {
			known[s.KeyID] = true
		} else if firstUnknown == "" {
			firstUnknown = s.KeyID
		}
	}
	switch {
	case len(known) == 0 && firstUnknown == "":
		return fmt.Errorf("tuf: %s metadata carries no signature; %d of the keys root version %d trusts for it are required: %w",
			role, r.Threshold, root.Signed.Version, trust.ErrThreshold)
	case len(known) == 0:
		return fmt.Errorf("tuf: %s metadata is signed by key %.12s, which root version %d does not trust for %s: %w",
			role, firstUnknown, root.Signed.Version, role, trust.ErrUnknownKey)
	case len(known) < r.Threshold:
		return fmt.Errorf("tuf: %s metadata has signatures by %d trusted keys, root version %d requires %d: %w",
			role, len(known), root.Signed.Version, r.Threshold, trust.ErrThreshold)
	}
	return fmt.Errorf("tuf: %s metadata: a signature by a trusted key does not verify (tampered metadata?): %v: %w", role, cause, trust.ErrSignature)
}

// Target is one verified target as a device uses it.
type Target struct {
	Path   string
	Length int64
	Digest string // "sha256:<hex>"
	Custom Custom
	// Expires is the expiry of the targets metadata that names it.
	Expires time.Time
	// TargetsVersion is the version of that targets metadata.
	TargetsVersion int64
	// Raw is the target's JSON entry as signed (length, hashes, custom).
	Raw []byte
}

// Model returns the target as the model metadata the agent's cache keeps.
func (t *Target) Model() *trust.ModelMetadata {
	return &trust.ModelMetadata{
		Type: trust.ModelType, Name: t.Custom.Name, Version: t.Custom.Version, Format: t.Custom.Format,
		Digest: t.Digest, Size: t.Length, Expires: t.Expires,
	}
}

// FindModel looks up the model target name:version (variant) in verified
// targets metadata and checks its custom fields against the request and
// agentVersion. Errors wrap trust.ErrNoTarget, trust.ErrMalformed or
// trust.ErrAgentVersion.
func FindModel(targets *metadata.Metadata[metadata.TargetsType], name, version, variant, agentVersion string) (*Target, error) {
	path := ModelPath(name, version, variant)
	tf := targets.Signed.Targets[path]
	if tf == nil {
		return nil, fmt.Errorf("tuf: targets version %d signs no target %s (model %s:%s); push it with starlingctl model push: %w",
			targets.Signed.Version, path, name, version, trust.ErrNoTarget)
	}
	t, err := targetOf(targets, path, tf)
	if err != nil {
		return nil, err
	}
	c := t.Custom
	if c.Kind != KindModel || c.Name != name || c.Version != version || c.Variant != variant {
		return nil, fmt.Errorf("tuf: target %s is signed as %s %s:%s variant %q, not model %s:%s variant %q: %w",
			path, c.Kind, c.Name, c.Version, c.Variant, name, version, variant, trust.ErrNoTarget)
	}
	if c.Format == "" {
		return nil, fmt.Errorf("tuf: target %s has no format: %w", path, trust.ErrMalformed)
	}
	if !AgentSatisfies(agentVersion, c.MinAgentVersion) {
		return nil, fmt.Errorf("tuf: target %s needs agent %s or newer, this agent is %s: %w", path, c.MinAgentVersion, agentVersion, trust.ErrAgentVersion)
	}
	return t, nil
}

// TargetAt returns the target at path in targets metadata (not yet
// checked against any request). Errors wrap trust.ErrNoTarget or
// trust.ErrMalformed.
func TargetAt(targets *metadata.Metadata[metadata.TargetsType], path string) (*Target, error) {
	tf := targets.Signed.Targets[path]
	if tf == nil {
		return nil, fmt.Errorf("tuf: targets version %d has no target %s: %w", targets.Signed.Version, path, trust.ErrNoTarget)
	}
	return targetOf(targets, path, tf)
}

func targetOf(targets *metadata.Metadata[metadata.TargetsType], path string, tf *metadata.TargetFiles) (*Target, error) {
	sum := tf.Hashes["sha256"]
	if len(sum) != 32 || tf.Length <= 0 {
		return nil, fmt.Errorf("tuf: target %s has no sha256 hash or no length: %w", path, trust.ErrMalformed)
	}
	t := &Target{Path: path, Length: tf.Length, Digest: "sha256:" + hex.EncodeToString(sum),
		Expires: targets.Signed.Expires, TargetsVersion: targets.Signed.Version}
	if tf.Custom == nil {
		return nil, fmt.Errorf("tuf: target %s has no custom fields: %w", path, trust.ErrMalformed)
	}
	if err := json.Unmarshal(*tf.Custom, &t.Custom); err != nil {
		return nil, fmt.Errorf("tuf: target %s custom fields: %v: %w", path, err, trust.ErrMalformed)
	}
	raw, err := json.Marshal(tf)
	if err != nil {
		return nil, fmt.Errorf("tuf: target %s: %w", path, err)
	}
	t.Raw = raw
	return t, nil
}

// AgentSatisfies reports whether agentVersion is at least min. Versions
// compare as dotted numbers with an optional leading "v" ("1.4.2"); an
// empty min is always met, and an agent version that is not numeric (a
// development build such as "dev") is taken to be the newest.
func AgentSatisfies(agentVersion, min string) bool {
	if min == "" {
		return true
	}
	a, ok := numericVersion(agentVersion)
	if !ok {
		return true
	}
	m, ok := numericVersion(min)
	if !ok {
		return false
	}
	for i := range max(len(a), len(m)) {
		var x, y int64
		if i < len(a) {
			x = a[i]
		}
		if i < len(m) {
			y = m[i]
		}
		if x != y {
			return x > y
		}
	}
	return true
}

func numericVersion(v string) ([]int64, bool) {
	v = strings.TrimPrefix(v, "v")
	if i := strings.IndexAny(v, "-+"); i >= 0 {
		v = v[:i]
	}
	if v == "" {
		return nil, false
	}
	var out []int64
	for _, p := range strings.Split(v, ".") {
		n, err := strconv.ParseInt(p, 10, 64)
		if err != nil || n < 0 {
			return nil, false
		}
		out = append(out, n)
	}
	return out, true
}
