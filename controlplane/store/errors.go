package store

import "errors"

// Sentinel errors. Every Store and Artifacts method wraps at most one of them,
// so callers can map them to an answer (404, 409, ...) with errors.Is.
var (
	// ErrNotFound: no model, device or artifact has the requested key.
	ErrNotFound = errors.New("store: not found")
	// ErrConflict: a model version already exists with a different digest.
	// Published versions are immutable; publish a new version instead.
	ErrConflict = errors.New("store: conflict")
	// ErrInvalid: an argument is malformed (an empty key, a bad digest).
	ErrInvalid = errors.New("store: invalid argument")
	// ErrNoChange may be returned by an UpdateDevice callback to leave the
	// device as it is; UpdateDevice then returns the stored device and nil.
	ErrNoChange = errors.New("store: no change")
	// ErrSchema: the store file was written by a newer version of the
	// control plane and cannot be read safely.
	ErrSchema = errors.New("store: unsupported schema version")
	// ErrClosed: the store was used after Close.
	ErrClosed = errors.New("store: closed")
)
