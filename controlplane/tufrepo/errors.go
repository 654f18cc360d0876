package tufrepo

import "errors"

// Sentinel errors. Rejected metadata also wraps the trust sentinel of the
// failed check (trust.Check names it).
var (
	// ErrOptions: a required option is missing.
	ErrOptions = errors.New("tufrepo: invalid options")
	// ErrNotFound: no such metadata file.
	ErrNotFound = errors.New("tufrepo: not found")
	// ErrNoRoot: no root metadata has been uploaded yet
	// (starlingctl keys init does it).
	ErrNoRoot = errors.New("tufrepo: repository has no root yet")
	// ErrRejected: uploaded metadata does not verify or does not follow
	// the trusted version.
	ErrRejected = errors.New("tufrepo: metadata rejected")
	// ErrConflict: uploaded metadata is not the next version (someone else
	// published first); fetch the current one and sign again.
	ErrConflict = errors.New("tufrepo: version conflict")
)
