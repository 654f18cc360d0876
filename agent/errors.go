package agent

import "errors"

// Sentinel errors.
var (
	// ErrConfig: a configuration field is missing or invalid; the message
	// names the field.
	ErrConfig = errors.New("invalid configuration")
)
