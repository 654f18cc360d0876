package trust

import "errors"

// Sentinel errors. Every rejection wraps exactly one of them so that callers
// (and the rejection reports sent to the control plane) can name the check
// that failed.
var (
	// ErrMalformed: the metadata or key could not be parsed.
	ErrMalformed = errors.New("malformed metadata")
	// ErrUnknownKey: no signature was made by a key this device trusts.
	ErrUnknownKey = errors.New("signed by an untrusted key")
	// ErrSignature: a signature by a trusted key does not verify.
	ErrSignature = errors.New("signature check failed")
	// ErrThreshold: fewer valid signatures than the threshold requires.
	ErrThreshold = errors.New("signature threshold not met")
	// ErrExpired: the metadata's expiry time has passed.
	ErrExpired = errors.New("metadata expired")
	// ErrDigest: the artifact's sha256 digest differs from the signed one.
	ErrDigest = errors.New("artifact digest mismatch")
	// ErrSize: the artifact's length differs from the signed one.
	ErrSize = errors.New("artifact size mismatch")
	// ErrRollback: the version is older than one already trusted.
	ErrRollback = errors.New("version rollback")
	// ErrFreeze: the newest timestamp on offer has expired, so the
	// repository's view may be frozen in the past.
	ErrFreeze = errors.New("stale timestamp (freeze)")
	// ErrMixAndMatch: metadata files from different repository versions
	// were combined (a version or hash differs from what the role above
	// it recorded).
	ErrMixAndMatch = errors.New("metadata from different repository versions (mix-and-match)")
	// ErrNoTarget: the signed targets metadata names no such target, or
	// names it with different fields than asked for.
	ErrNoTarget = errors.New("not a signed target")
	// ErrAgentVersion: the target needs a newer agent than this one.
	ErrAgentVersion = errors.New("agent too old for target")
)

// Check returns the short name of the check an error failed ("signature",
// "digest", ...), or "" if err is not a trust rejection. It is what the agent
// reports to the control plane.
func Check(err error) string {
	for _, c := range []struct {
		err  error
		name string
	}{
		{ErrMalformed, "malformed"},
		{ErrUnknownKey, "unknown-key"},
		{ErrSignature, "signature"},
		{ErrThreshold, "threshold"},
		{ErrExpired, "expiry"},
		{ErrDigest, "digest"},
		{ErrSize, "size"},
		{ErrRollback, "rollback"},
		{ErrFreeze, "freeze"},
		{ErrMixAndMatch, "mix-and-match"},
		{ErrNoTarget, "unknown-target"},
		{ErrAgentVersion, "agent-version"},
	} {
		if errors.Is(err, c.err) {
			return c.name
		}
	}
	return ""
}
