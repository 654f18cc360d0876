package uplink

import "errors"

// Sentinel errors.
var (
	// ErrOptions: a required option is missing or out of range.
	ErrOptions = errors.New("uplink: invalid options")
	// ErrFetchTimeout: a chunk got no valid answer after every retry.
	ErrFetchTimeout = errors.New("uplink: fetch timed out")
	// ErrRemote: the control plane answered a fetch with an error
	// (e.g. it does not hold the artifact).
	ErrRemote = errors.New("uplink: control plane refused fetch")
)
