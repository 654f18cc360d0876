package reconcile

import "errors"

// Sentinel errors.
var (
	// ErrOptions: a required option is missing.
	ErrOptions = errors.New("reconcile: invalid options")
	// ErrLoad: a verified artifact could not be loaded or failed its
	// warm-up run; reported with check "load".
	ErrLoad = errors.New("model failed to load")
)

// CheckLoad is the check name reported for ErrLoad.
const CheckLoad = "load"
