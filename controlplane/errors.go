package controlplane

import "errors"

// Sentinel errors.
var (
	// ErrOptions: Options are incomplete or malformed; the message names the field.
	ErrOptions = errors.New("controlplane: invalid options")
	// ErrStarted: Start was called twice, or after Close.
	ErrStarted = errors.New("controlplane: already started or closed")
)
