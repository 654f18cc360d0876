package tuf

import "errors"

// Sentinel errors of this package. Rejections of metadata or targets wrap
// the sentinels of the parent trust package instead (trust.ErrRollback,
// trust.ErrFreeze, ...), so trust.Check names the failed check.
var (
	// ErrNotFound: the repository has no such metadata file. A Fetcher
	// returns it (wrapped) for a root version that does not exist yet,
	// which ends the root rotation walk.
	ErrNotFound = errors.New("tuf: metadata not found")
	// ErrOptions: a required option is missing or invalid.
	ErrOptions = errors.New("tuf: invalid options")
	// ErrTooLarge: a metadata file exceeds its role's size limit.
	ErrTooLarge = errors.New("tuf: metadata too large")
)
