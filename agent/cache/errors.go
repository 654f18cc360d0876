package cache

import "errors"

// Sentinel errors. Methods wrap them with the model, version or digest they
// concern.
var (
	// ErrNotFound: no record (or no artifact) for the requested key.
	ErrNotFound = errors.New("cache: not found")
	// ErrIncomplete: the artifact's chunks do not yet cover its whole size.
	ErrIncomplete = errors.New("cache: artifact incomplete")
	// ErrState: the requested state change is not allowed from the
	// record's current state (e.g. activating a version with no artifact).
	ErrState = errors.New("cache: invalid state change")
	// ErrSchema: the file was written by a newer, unknown schema version.
	ErrSchema = errors.New("cache: unknown schema version")
	// ErrCorrupt: a consistency check found a broken invariant.
	ErrCorrupt = errors.New("cache: inconsistent")
)
