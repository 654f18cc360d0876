//go:build !unix

package fleet

import "errors"

// reload is not available without Unix signals: reload Mosquitto by hand.
func reload(int) error { return errors.New("signals are not supported on this platform") }
