package api

import "errors"

// ErrOptions is returned by New for incomplete Options; the message names the field.
var ErrOptions = errors.New("api: invalid options")
